"""The ``diffeosense`` command line: one sub-module per command group, at the edge.

Each module in ``_COMMANDS`` defines ``register(subparsers)`` which adds its
sub-command(s) and sets ``func`` on the parsed namespace.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMANDS = [
    "diffeosense.cli.demo",
    "diffeosense.cli.diffeo",
    "diffeosense.cli.train",
    "diffeosense.cli.measure",
    "diffeosense.cli.scale_detection",
    "diffeosense.cli.sweep",
    "diffeosense.cli.reproduce",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="diffeosense",
        description="How deep networks lose spatial information with training: sensitivities to "
        "diffeomorphisms (D), to white noise (G) and their ratio R = D/G, layer by layer.",
    )
    parser.add_argument("--version", action="version", version=f"diffeosense {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Bad input reaches the user as one clear line, not a traceback.
        print(f"diffeosense {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
