"""``diffeosense measure`` and ``diffeosense plot``: D, G, R layer by layer, and their figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
"""

_PLOT_EXAMPLES = """examples:
  diffeosense plot runs/v/sens-init/sensitivity.csv runs/v/sens/sensitivity.csv \\
      --labels init trained --out init_vs_trained.png
  diffeosense plot runs/t/track.csv --out track.png   # a table written while training
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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a registered model name, at initialization "
                     "(e.g. lenet, vgg11, resnet18, simplecnn)")
    src.add_argument("--checkpoint", help="a checkpoint written by `diffeosense train`")
    p.add_argument("--model-seed", type=int, default=0,
                   help="seed of the initialization for --model (default 0)")
    p.add_argument("--data", default=None, help="dataset name (default: the checkpoint's "
                   "dataset, else mnist-embedded)")
    p.add_argument("--data-root", default=None, help="folder of the torchvision datasets")
    p.add_argument("--no-download", action="store_true",
                   help="never try to download a missing dataset")
    p.add_argument("--layers", default="all", help="'all', 'modules', kinds joined by '+' "
                   "(conv+activation), or comma-separated layer names (default all)")
    p.add_argument("--n-probes", type=int, default=500,
                   help="test images used (default 500; on a scale-detection task taken "
                   "alternately from its two classes)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="probes per forward pass; does not change the result (default 128)")
    p.add_argument("--perturbation", default=None,
                   help="perturbation spec, e.g. diffeo or diffeo:cut=3,displacement=1.0 "
                   "(default: the paper's diffeo, 1 px displacement, cut 3; for the "
                   "scale-detection data, the task's move, pixel-move)")
    p.add_argument("--seed", type=int, default=0, help="seed of diffeos and noise (default 0)")
    p.add_argument("--noise-match", choices=["sample", "batch"], default="sample",
                   help="noise norm matched per image (default) or to the batch mean")
    p.add_argument("--noise-rectify", action="store_true",
                   help="use rectified (non-negative) noise directions")
    p.add_argument("--denominator", default="streaming",
                   choices=["streaming", "pairs-incl-diag", "pairs-excl-diag"],
                   help="E||f(x1)-f(x2)||^2 convention: streaming (= pairs-excl-diag, unbiased; "
                   "default) or pairs-incl-diag (the authors' cdist().mean(), x (N-1)/N)")
    p.add_argument("--statistic", choices=["mean", "median", "component-median"],
                   default="mean",
                   help="numerator over probes, Delta = f(tau x) - f(x): mean of ||Delta||^2 "
                   "(default), median of ||Delta||^2 over probes, or component-median = "
                   "sum_j median_i Delta_ij^2 (the authors' median; memory n_probes x size)")
    p.add_argument("--batchnorm", choices=["eval", "batch"], default="eval",
                   help="BatchNorm statistics: eval = running statistics, the model as given "
                   "(default); batch = each of x, tau x, x + eta normalized by its own "
                   "statistics over all probes (the authors' convention at initialization; "
                   "--batch-size is then ignored)")
    p.add_argument("--noise", type=float, default=0.0,
                   help="measure on probes corrupted by Gaussian noise of this L2 norm, the "
                   "corruption of `train --noise` (default 0: clean probes)")
    p.add_argument("--channels", action="store_true",
                   help="also per-channel rows and the channel-averaged representation")
    p.add_argument("--method", choices=["auto", "fx", "hooks"], default="auto",
                   help="layer discovery: torch.fx, forward hooks, or fx with hook fallback")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["csv", "parquet", "json"], default="csv",
                   help="table format (default csv)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_measure)

    q = subparsers.add_parser(
        "plot", help="redraw D, G, R against depth from saved results",
        description="Plot one or more saved sensitivity results (CSV/JSON/Parquet written by "
        "`diffeosense measure`), overlaid on the same depth axis; or one tracking table "
        "(track.csv/.parquet written by `diffeosense train --track-sensitivity`): heatmaps of "
        "log D, G, R over (layer, epoch) and the output's D, G, R and errors against epoch.",
        epilog=_PLOT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("results", nargs="+", help="result files, or folders holding "
                   "sensitivity.{csv,json,parquet} (or track.{csv,parquet})")
    q.add_argument("--labels", nargs="*", help="legend labels, one per result")
    q.add_argument("--view", default="full", choices=["full", "channel-mean"],
                   help="which rows to plot (default full)")
    q.add_argument("--title", default=None, help="figure title")
    q.add_argument("--out", required=True, help="output image (.png, .pdf, .svg)")
    q.set_defaults(func=run_plot)


def _layers(spec: str):
    return [s.strip() for s in spec.split(",") if s.strip()] if "," in spec else spec


def run_measure(args: argparse.Namespace) -> int:
    from .._io import run_lock

    # The lock checks --out (a file, not writable, in use) before any work.
    with run_lock(args.out):
        return _measure_locked(args)


def _measure_locked(args: argparse.Namespace) -> int:
    import torch

    from ..sensitivity import measure

    meta: dict = {}
    data_cfg = None
    if args.checkpoint:
        from ..train import load_checkpoint

        path = Path(args.checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint {path}")
        model, tcfg, info = load_checkpoint(path)
        data_name = args.data or tcfg.data.name
        if args.data is None:
            data_cfg = tcfg.data  # the run's own split (P, seed), e.g. a generated task
        meta.update(model=tcfg.model, checkpoint=str(path), epoch=info.get("epoch"))
    else:
        from ..models import create_model

        data_name = args.data or "mnist-embedded"
        model = None
        meta.update(model=args.model, model_seed=args.model_seed)
    import dataclasses

    from ..data import DataConfig, load_dataset

    data_cfg = data_cfg or DataConfig(name=data_name)
    ds = load_dataset(dataclasses.replace(data_cfg, root=args.data_root or data_cfg.root,
                                          download=not args.no_download))
    from ..data.scale_detection import is_task_dataset
    from ..probes import balanced_probes, task_perturbation

    x, y = (ds.x_test, ds.y_test) if ds.x_test is not None else (ds.x_train, ds.y_train)
    perturbation = args.perturbation
    if is_task_dataset(data_name):
        # The experiments' conventions: class-balanced probes, the task's pixel move.
        x = balanced_probes(x, y, None)
        perturbation = perturbation or task_perturbation(data_name)
        meta.update(probes="split taken alternately from the two classes (balanced)")
    perturbation = perturbation or "diffeo"
    if model is None:
        # Seeded initialization through a local generator state (never the global seed).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.model_seed)
            model = create_model(args.model, in_channels=x.shape[1],
                                 num_classes=ds.num_classes)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta.update(data=data_name, label=meta.get("model"))
    res = measure(model, x, layers=_layers(args.layers), perturbation=perturbation,
                  n_probes=args.n_probes, batch_size=args.batch_size, seed=args.seed,
                  device=device, noise_match=args.noise_match, noise_rectify=args.noise_rectify,
                  denominator=args.denominator, statistic=args.statistic,
                  channels=args.channels, method=args.method, batchnorm=args.batchnorm,
                  probe_noise=args.noise,
                  progress=not args.no_progress, meta=meta)
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
    from ..plots.sensitivity import plot_sensitivity
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
    labels = args.labels or [
        r.config.get("label") or Path(p).parent.name or f"#{i}"
        for i, (r, p) in enumerate(zip(results, args.results, strict=True))]
    plot_sensitivity(results, labels, view=args.view, title=args.title, path=args.out)
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
