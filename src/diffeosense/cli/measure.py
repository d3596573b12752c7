"""``diffeosense measure`` and ``diffeosense plot``: D, G, R layer by layer, and their figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _options as _o

_MEASURE_EXAMPLES = """examples:
  diffeosense measure --model lenet --data mnist-embedded --out runs/lenet-init
  diffeosense measure --checkpoint runs/v/checkpoints/best.pt --layers all --n-probes 500 \\
      --out runs/v/sens
  diffeosense measure --model vgg11 --data cifar10 --layers conv+activation --channels \\
      --perturbation diffeo:cut=3,displacement=1 --out runs/vgg-init
  diffeosense measure --model resnet18 --data cifar10 --batchnorm batch \\
      --statistic component-median --out runs/r18-init-authors   # the published conventions
  diffeosense measure --checkpoint runs/r18-noisy/checkpoints/best.pt --noise 1.0 \\
      --out runs/r18-noisy/sens                                  # noisy probes, as trained
  diffeosense measure --model resnet18 --data folder:photos --resize 64 --crop 64 \\
      --out runs/r18-photos                                      # your own images
  diffeosense measure --model torchvision:resnet18 --model-kw weights=DEFAULT \\
      --data folder:photos --resize 256 --crop 224 --normalize imagenet --out runs/tv-r18
  diffeosense measure --model mynet.py:Net --model-kw width=64 --weights net.pt \\
      --layers 're:layer[1-4]\\..*relu' --output logits --out runs/mine   # your own net
  diffeosense measure --checkpoint model.ts.pt --out runs/ts      # TorchScript / torch.export
"""

_PLOT_EXAMPLES = """examples:
  diffeosense plot runs/v/sens-init/sensitivity.csv runs/v/sens/sensitivity.csv \\
      --labels init trained --out init_vs_trained.png
  diffeosense plot runs/t/track.csv --out track.png   # a table written while training
  diffeosense plot runs/zoo/models/*.csv --x relative-depth --out zoo_layers.png
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "measure",
        help="measure D, G and R of a model at every layer",
        description="Sensitivity of every layer of a network to random diffeomorphisms (D), to "
        "norm-matched white noise (G) and R = D / G, on the first N test images. Writes "
        "sensitivity.csv (tidy table), sensitivity.meta.json (config, seed, provenance) and "
        "sensitivity.png (D, G, R against depth) into --out.",
        epilog=_MEASURE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _o.add_source_options(
        p, model_help="a model spec, at its seeded initialization (or with --weights)",
        data_help="dataset (default: the checkpoint's dataset, with its resize, crop and "
        "normalization, else mnist-embedded)")
    _o.add_measure_options(p)
    _o.add_device_option(p)
    _o.add_output_options(p)
    p.set_defaults(func=run_measure)

    q = subparsers.add_parser(
        "plot", help="redraw D, G, R against depth from saved results",
        description="Plot one or more saved sensitivity results (CSV/JSON/Parquet written by "
        "`diffeosense measure` or `diffeosense zoo`), overlaid: on one depth axis when they "
        "share their layer names, else against relative depth (--x); or one tracking table "
        "(track.csv/.parquet written by `diffeosense train --track-sensitivity`): heatmaps of "
        "log D, G, R over (layer, epoch) and the output's D, G, R and errors against epoch.",
        epilog=_PLOT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("results", nargs="+", help="result files, or folders holding "
                   "sensitivity.{csv,json,parquet} (or track.{csv,parquet})")
    q.add_argument("--labels", nargs="*", help="legend labels, one per result (default: "
                   "the model spec and dataset each result records)")
    q.add_argument("--view", default="full", choices=["full", "channel-mean"],
                   help="which rows to plot (default full)")
    q.add_argument("--x", default=None, choices=["depth", "relative-depth", "layer"],
                   help="x axis: depth = layer index (input 0); relative-depth = depth / the "
                   "result's last depth, in [0, 1], for nets of different depths; layer = the "
                   "layer names, only when the results share them (default: depth when the "
                   "layer names agree, else relative-depth)")
    q.add_argument("--title", default=None, help="figure title")
    q.add_argument("--out", required=True, help="output image (.png, .pdf, .svg)")
    q.set_defaults(func=run_plot)


def run_measure(args: argparse.Namespace) -> int:
    from .._io import run_lock

    _o.check_out(args.out)
    _o.check_device(args.device)
    # The lock checks --out (not writable, in use) before any work; a folder it made is
    # removed again if the command fails before writing into it.
    try:
        with run_lock(args.out):
            return _measure_locked(args)
    except KeyboardInterrupt:
        raise _o.interrupted(f"nothing was written to {args.out}") from None


# What names the model of a result (its sidecar's config holds the source's meta).
_IDENTITY = ("model", "checkpoint", "model_file", "model_seed", "model_kwargs", "weights")


def _identity(cfg: dict) -> dict:
    if cfg.get("checkpoint") is not None:
        # A checkpoint names its model: the other entries (recorded by later versions, such
        # as its model_kwargs) must not make a result of the same file look like another's.
        return {"checkpoint": str(Path(cfg["checkpoint"]).resolve())}
    out = {k: cfg.get(k) for k in _IDENTITY}
    for k in ("checkpoint", "weights"):
        if out[k] is not None:
            out[k] = str(Path(out[k]).resolve())
    return out


def check_other_model(out: Path, meta: dict, names: tuple[str, ...]) -> None:
    """Refuse to overwrite, in ``out``, the result of another model than the one ``meta``
    (:attr:`~diffeosense.sources.ModelSource.meta`) names, as ``train`` refuses a folder
    holding another run; re-measuring the same model there (other options) overwrites it.
    ``names``: the sidecars (or JSON tables) of the command's results."""
    ours = _identity(meta)
    for name in names:
        path = out / name
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text()).get("config") or {}
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: nothing to compare; it is replaced
        cfg = cfg.get("measure", cfg) if isinstance(cfg.get("measure"), dict) else cfg
        theirs = _identity(cfg)
        if theirs != ours:
            def who(d: dict) -> str:
                return ", ".join(f"{k} {v}" for k, v in d.items() if v not in (None, {}))

            raise ValueError(
                f"{out} already holds the result of another model ({who(theirs)}; {path.name}), "
                f"not of this one ({who(ours)}): choose another --out, or delete {out} first")


def _measure_locked(args: argparse.Namespace) -> int:
    from ..sensitivity import MeasureConfig, measure
    from ..sources import check_fits, resolve_data, resolve_device

    source = _o.model_source(args)
    check_other_model(Path(args.out), source.meta, ("sensitivity.meta.json", "sensitivity.json"))
    # --data with a checkpoint: that dataset's own default split (pooling keeps the
    # checkpoint's P and seed for the same dataset; measure never did).
    data = resolve_data(args.data, source, root=args.data_root, download=not args.no_download,
                        keep_split=False, options=_o.data_options(args))
    model = source.build(data)
    check_fits(model, source.name, data.probes, data.name, _o.fit_hint(source))
    options = _o.measure_options(args)
    options["perturbation"] = options["perturbation"] or data.perturbation
    meta = {**source.meta, **data.meta, "label": source.name}
    res = measure(model, data.probes, config=MeasureConfig(**options),
                  device=resolve_device(args.device), progress=not args.no_progress, meta=meta)
    out = Path(args.out)
    from .._io import check_run_folder

    check_run_folder(out)  # deleted while measuring: fail, do not re-create half a result
    table = res.save(out / f"sensitivity.{args.format}")
    print(f"wrote {table}")
    if not args.no_plot:
        from ..plots.sensitivity import plot_sensitivity

        png = out / "sensitivity.png"
        plot_sensitivity(res, path=png)
        print(f"wrote {png}")
    full = res.to_frame("full")
    last = full.iloc[-1]
    print(json.dumps({"layers": len(full), "n_probes": int(last.n_probes),
                      "output": {k: float(last[k]) for k in ("D", "G", "R")}}))
    return 0


def _result_path(p: str) -> Path:
    path = Path(p)
    if path.is_dir():
        found = [path / f"sensitivity.{ext}" for ext in ("csv", "parquet", "json")
                 if (path / f"sensitivity.{ext}").exists()]  # fmt: skip
        if not found:
            found = [path / f"track.{ext}" for ext in ("csv", "parquet")
                     if (path / f"track.{ext}").exists()]  # fmt: skip
        if not found:
            raise FileNotFoundError(f"no sensitivity.csv/.parquet/.json or track.csv/.parquet "
                                    f"in {path}")
        if len(found) > 1:
            # Never pick one silently: an older table beside a newer one is a stale result.
            from datetime import datetime

            found.sort(key=lambda p: p.stat().st_mtime)
            when = ", ".join(f"{p.name} (written {datetime.fromtimestamp(p.stat().st_mtime)})"
                             for p in found)  # fmt: skip
            raise ValueError(f"{path} holds several results: {when}; the newest is "
                             f"{found[-1].name}. Name the file to plot.")
        return found[0]
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}")
    return path


def run_plot(args: argparse.Namespace) -> int:
    from ..plots.sensitivity import curve_labels, plot_sensitivity
    from ..sensitivity import SensitivityResult

    paths = [_result_path(p) for p in args.results]
    tracks = [p for p in paths if _is_track(p)]
    if tracks:
        if len(paths) != 1:
            raise ValueError("a tracking table is plotted alone: give one track.csv/.parquet")
        from ..plots.tracking import plot_tracking

        plot_tracking(tracks[0], view=args.view, title=args.title, path=args.out)
        print(f"wrote {args.out}")
        return 0
    results = [SensitivityResult.load(p) for p in paths]
    if args.labels and len(args.labels) != len(results):
        raise ValueError(f"got {len(args.labels)} labels for {len(results)} results")
    # Each curve: the model spec and dataset its result records (a table from before results
    # named their model: the folder it lies in).
    labels = args.labels or curve_labels([r.config for r in results],
                                         [Path(p).parent.name for p in args.results])
    plot_sensitivity(results, labels, view=args.view, x=args.x, title=args.title,
                     path=args.out)
    print(f"wrote {args.out}")
    return 0


def _is_track(path: Path) -> bool:
    """A tracking table: its sidecar says so, or (no sidecar) its header has an epoch column."""
    side = path.with_name(path.stem + ".meta.json")
    if side.exists():
        try:
            fmt = json.loads(side.read_text()).get("format")  # any version: /1 has no hash
            return isinstance(fmt, str) and fmt.startswith("diffeosense.track/")
        except (json.JSONDecodeError, AttributeError):
            return False
    if path.suffix.lower() == ".csv":
        with open(path) as f:
            return "epoch" in f.readline().strip().split(",")
    return False
