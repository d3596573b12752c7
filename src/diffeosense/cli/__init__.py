"""The ``diffeosense`` command line: one sub-module per command group, at the edge.

Each module in ``_COMMANDS`` defines ``register(subparsers)`` which adds its
sub-command(s) and sets ``func`` on the parsed namespace. Options that several commands
take (measurement, backend, model/data source, output/progress/device) are defined once, in
:mod:`diffeosense.cli._options`; what a measurement runs on (checkpoint or model, dataset,
probes, device) is resolved once, by :mod:`diffeosense.sources`.

Errors. The library's expected errors (a bad value, a missing file, a folder in use, no
permission, no space left) reach the user as one line ``diffeosense CMD: error: ...`` and
exit code 2, as argparse's own usage errors do; ``--debug`` (before or after the command)
shows the traceback instead. Anything else is a bug and keeps its traceback.

Ctrl-C (SIGINT) is one line ``diffeosense CMD: interrupted: ...`` saying what was kept and
how to go on (a command raises :class:`Interrupted` with that text), and exit code 130, the
shell's code for SIGINT.

Every command checks its inputs before it makes anything: ``--out`` (:func:`diffeosense.
_io.check_output_path`), the device (:func:`diffeosense._validate.available_device`), and a
folder it created is removed again when it fails before writing into it.
"""

from __future__ import annotations

import argparse
import errno
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
    "diffeosense.cli.pooling",
    "diffeosense.cli.scale_detection_2d",
    "diffeosense.cli.zoo",
]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted command kept and how to go on (one line)."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="diffeosense",
        description="How deep networks lose spatial information with training: sensitivities to "
        "diffeomorphisms (D), to white noise (G) and their ratio R = D/G, layer by layer.",
    )
    parser.add_argument("--version", action="version", version=f"diffeosense {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        # SUPPRESS: a sub-command's default must not override a --debug given before it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")  # fmt: skip
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .._io import RunFolderBusy

    # OSError covers FileNotFoundError, PermissionError, NotADirectoryError and ENOSPC.
    return (ValueError, OSError, RunFolderBusy)


def error_line(e: BaseException) -> str:
    """One line for an expected error: an OSError says what failed on which file."""
    if isinstance(e, OSError) and e.strerror and e.filename and e.args[1:2] == (e.strerror,):
        msg = f"{e.strerror}: {e.filename}"
        if e.errno == errno.ENOSPC:
            msg += " (free some space or write elsewhere; finished files are intact)"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader of our output left (``diffeosense ... | head``): not an error of ours.
        # Point stdout at devnull so that the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _expected_errors() as e:
        if args.debug:
            raise
        print(f"diffeosense {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        what = str(e) if isinstance(e, Interrupted) and str(e) else "stopped"
        print(f"diffeosense {args.command}: interrupted: {what}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
