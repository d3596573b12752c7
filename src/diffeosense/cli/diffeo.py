"""``diffeosense diffeo show``: a picture of the random diffeomorphisms over a range of (T, cut).

Writes a PNG and, next to it, a JSON sidecar with the resolved config, the temperatures of every
panel, the provenance and the command line, so the figure says how it was made.
"""

from __future__ import annotations

import argparse
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..diffeo import INTERPOLATIONS

DEFAULT_OUT = "results/diffeo_show.png"
DEFAULT_CUTS = (2, 3, 4, 5, 6)


@dataclass
class ShowConfig:
    """Everything that determines the ``diffeo show`` figure (saved in the sidecar JSON)."""

    image: str | None = None  # path of an image file; else `photo`
    photo: str = "chelsea"  # a scikit-image photograph (diffeosense.plots.diffeo.PHOTOS)
    size: int = 32  # square side in pixels after centre-crop and resize
    cuts: tuple[int, ...] = DEFAULT_CUTS  # one row per cut
    inside: int = 4  # temperatures from T_min to T_max (both included), log-spaced
    below: int = 1  # extra temperatures below T_min, same log step
    above: int = 1  # extra temperatures above T_max, same log step
    seed: int = 0
    interp: str = "bilinear"
    out: str = DEFAULT_OUT
    dpi: int = 150
    temperatures: dict[str, list[float]] = field(default_factory=dict)  # filled in: per cut


def _cuts(text: str) -> tuple[int, ...]:
    """``"2,3,5,8"`` or a range ``"2-6"`` -> a tuple of ints (argparse type)."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            values = tuple(range(lo, hi + 1))
        else:
            values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 2,3,5,8 or a range like 2-6, got {text!r}"
        ) from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(
            f"cuts must be integers >= 2 (the natural range needs ln c > 0), got {text!r}"
        )
    return values


def register(subparsers) -> None:
    from ..plots.diffeo import PHOTOS

    p = subparsers.add_parser(
        "diffeo",
        help="random max-entropy diffeomorphisms: show them on an image",
        description="Random maximum-entropy diffeomorphisms (Petrini et al. 2021): displacement "
        "fields sum_{i,j} C_ij sin(i pi x) sin(j pi y) with C_ij ~ N(0, T / (i^2 + j^2)) on the "
        "modes sqrt(i^2 + j^2) < cut + 1/2.",
    )
    sub = p.add_subparsers(dest="diffeo_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser(
        "show",
        help="render an image deformed over a grid of (cut, T) to a PNG",
        description="Render a grid of deformed copies of an image: rows = cuts, columns = "
        "temperatures log-spaced over and beyond each cut's natural range [T_min, T_max] "
        "(typical displacement of half a pixel .. no overhangs). Frames mark each panel's T: "
        "grey below, green inside, red above the range; titles give T and the typical "
        "displacement in pixels. Writes the PNG and a JSON sidecar (config, temperatures, "
        "provenance, command) next to it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = s.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="PATH",
                     help="image file to deform (PNG, JPEG, TIFF, BMP, ...: anything Pillow reads); "
                     "centre-cropped to a square")
    src.add_argument("--photo", choices=PHOTOS, default=ShowConfig.photo, metavar="NAME",
                     help=f"shipped scikit-image photograph, used without --image: {', '.join(PHOTOS)}")
    s.add_argument("--size", type=int, default=ShowConfig.size,
                   help="side in pixels the image is resized to (32 like CIFAR-10; 64, 128, ...)")
    s.add_argument("--cuts", type=_cuts, default=DEFAULT_CUTS, metavar="LIST",
                   help="cutoffs, one row each: comma list (2,3,5,8) or range (2-6)")
    s.add_argument("--inside", type=int, default=ShowConfig.inside,
                   help="columns log-spaced from T_min to T_max of each cut (both included)")
    s.add_argument("--below", type=int, default=ShowConfig.below,
                   help="extra columns below T_min (same log step)")
    s.add_argument("--above", type=int, default=ShowConfig.above,
                   help="extra columns above T_max (same log step)")
    s.add_argument("--seed", type=int, default=ShowConfig.seed,
                   help="seed of the fields (one field per row, scaled by sqrt(T) along the row)")
    s.add_argument("--interp", choices=INTERPOLATIONS, default=ShowConfig.interp,
                   help="interpolation of the deformed image")
    s.add_argument("--out", default=DEFAULT_OUT,
                   help="output PNG; the sidecar JSON gets the same name with .json")
    s.add_argument("--dpi", type=int, default=ShowConfig.dpi, help="resolution of the PNG")
    s.set_defaults(func=run_show)


def show(config: ShowConfig) -> tuple[Path, Path]:
    """Render and write the figure and its sidecar; returns (png path, json path)."""
    from .._io import write_json
    from ..plots.diffeo import load_image, plot_diffeo_grid, save_figure, temperature_ladder
    from ..provenance import provenance

    if config.size < 4:
        raise ValueError(f"--size must be >= 4 pixels, got {config.size}.")
    if config.dpi < 10:
        raise ValueError(f"--dpi must be >= 10, got {config.dpi}.")
    out = Path(config.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {config.out}.")
    t0 = time.perf_counter()
    image = load_image(config.image, None if config.image else config.photo, config.size)
    temps = [temperature_ladder(config.size, c, config.inside, config.below, config.above)
             for c in config.cuts]
    config.temperatures = {str(c): t for c, t in zip(config.cuts, temps, strict=True)}
    source = Path(config.image).name if config.image else f"skimage.data.{config.photo}"
    title = (
        f"Random max-entropy diffeomorphisms of {source} ({config.size}x{config.size} px)\n"
        "rows: cut c, natural range [T_min, T_max]; columns: temperature T\n"
        f"δ = typical displacement; one field per row scaled by sqrt(T) (seed {config.seed}, "
        f"{config.interp})"
    )
    fig = plot_diffeo_grid(image, config.cuts, temps, seed=config.seed, interp=config.interp,
                           title=title)
    save_figure(fig, out, dpi=config.dpi)
    sidecar = out.with_suffix(".json")
    write_json(sidecar, {
        "config": asdict(config),
        "command": command_line(config),
        "provenance": provenance(),
        "seconds": time.perf_counter() - t0,
    })
    return out, sidecar


def command_line(config: ShowConfig) -> str:
    """The command that re-creates this figure (every option explicit)."""
    source = f"--image {shlex.quote(config.image)}" if config.image else f"--photo {config.photo}"
    return (
        f"diffeosense diffeo show {source} --size {config.size} "
        f"--cuts {','.join(map(str, config.cuts))} --inside {config.inside} --below {config.below} "
        f"--above {config.above} --seed {config.seed} --interp {config.interp} "
        f"--out {shlex.quote(config.out)} --dpi {config.dpi}"
    )


def run_show(args: argparse.Namespace) -> int:
    from ._options import check_out

    check_out(args.out, kind="file")
    config = ShowConfig(
        image=args.image, photo=args.photo, size=args.size, cuts=tuple(args.cuts),
        inside=args.inside, below=args.below, above=args.above, seed=args.seed,
        interp=args.interp, out=args.out, dpi=args.dpi,
    )
    png, sidecar = show(config)
    print(f"wrote {png} and {sidecar}")
    return 0
