"""``diffeosense pooling``: spatial vs channel pooling of a trained (or initialized) network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_EXAMPLES = """examples:
  diffeosense pooling --checkpoint runs/v/checkpoints/last.pt \\
      --init-checkpoint runs/v/checkpoints/init.pt --data mnist-embedded --out runs/v/pooling
  diffeosense pooling --model vgg11 --data cifar10 --n-shuffles 5 --out runs/vgg-init-pooling
  ck=runs/scale-detection-<hash>/runs/<run>/train/checkpoints  # a 1D scale-detection unit
                                        # (<run>: its "run" in summary.json's units)
  diffeosense pooling --checkpoint $ck/last.pt --init-checkpoint $ck/init.pt \\
      --init-shuffles 3 --n-probes all --denominator pairs-incl-diag --out runs/pool-s2

On a scale-detection task (a checkpoint of `diffeosense scale-detection`, or of `diffeosense
train --data scale-detection-1d:...`), the probes are the task's test split, taken alternately
from the two classes (any prefix is balanced), and the perturbation is the task's
label-preserving pixel move (pixel-move), as in the experiment.

Writes into --out: pooling.csv (one row per layer: D, G, R original and shuffled, channel-mean
view, stability, channel_fraction, spatial_fraction, homogeneous_fraction), sensitivity.csv
(every measured row), spectra.csv (filter spectra), each with a .meta.json sidecar; the same
with the prefix init_ for --init-checkpoint; spectra.png and pooling.png.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pooling",
        help="spatial vs channel pooling: filter spectra and D/G/R of channel-shuffled copies",
        description="Tell spatial pooling from channel pooling (Tomasini et al. 2022, Figs. 3, "
        "4): project every convolution filter on the eigenvectors of its grid's Laplacian "
        "(spectra; eigenvalue 0 = homogeneous filter), and measure D, G, R layer by layer for "
        "the net and for K copies whose convolutions have their input channels permuted "
        "(one seeded permutation per layer): the stability that survives shuffling is spatial "
        "pooling, the stability lost is channel pooling.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by `diffeosense train`")
    src.add_argument("--model", help="a registered model name, at initialization")
    p.add_argument("--init-checkpoint", default=None,
                   help="the same net at initialization (e.g. checkpoints/init.pt): its spectra "
                   "and D/G/R are drawn beside the trained ones")
    p.add_argument("--model-seed", type=int, default=0,
                   help="seed of the initialization for --model (default 0)")
    p.add_argument("--data", default=None, help="dataset name (default: the checkpoint's "
                   "dataset and split, else mnist-embedded); the checkpoint's P and data "
                   "seed are kept when --data names its dataset with other options (they fix "
                   "a scale-detection task's split)")
    p.add_argument("--data-root", default=None, help="folder of the torchvision datasets")
    p.add_argument("--no-download", action="store_true",
                   help="never try to download a missing dataset")
    p.add_argument("--n-shuffles", type=int, default=3,
                   help="K channel-shuffled copies (default 3)")
    p.add_argument("--init-shuffles", type=int, default=0,
                   help="shuffled copies of the --init-checkpoint net too (default 0: its "
                   "spectra and original D/G/R only)")
    p.add_argument("--no-first-layer", action="store_true",
                   help="do not shuffle the first convolution (its inputs are the image "
                   "channels)")
    p.add_argument("--shuffle-outputs", action="store_true",
                   help="permute the output channels of every convolution as well")
    p.add_argument("--layers", default="all", help="'all', kinds joined by '+' "
                   "(conv+activation), or comma-separated layer names (default all)")
    p.add_argument("--n-probes", type=_n_probes, default=500,
                   help="test images used, or 'all' (default 500; on a scale-detection task "
                   "the first of the class-balanced test split)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="probes per forward pass; does not change the result (default 128)")
    p.add_argument("--perturbation", default=None,
                   help="perturbation spec (default diffeo: 1 px displacement, cut 3; on a "
                   "scale-detection task, the task's label-preserving pixel move)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the diffeos, noise and permutations (default 0)")
    p.add_argument("--denominator", default="streaming",
                   choices=["streaming", "pairs-incl-diag", "pairs-excl-diag"],
                   help="E||f(x1)-f(x2)||^2 convention (see `diffeosense measure`)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["csv", "parquet", "json"], default="csv",
                   help="table format (default csv)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _n_probes(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of probes or 'all', got "
                                         f"{value!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 probes, got {n}")
    return n


def _base(data_name: str) -> str:
    """The dataset of a spec without its options (``scale-detection-1d:xi=8`` ->
    ``scale-detection-1d``)."""
    return data_name.lower().partition(":")[0]


def _load(path: str):
    from ..train import load_checkpoint

    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint {path}")
    return load_checkpoint(path)


def run(args: argparse.Namespace) -> int:
    from .._io import run_lock

    # The lock checks --out (a file, not writable, in use) before any work.
    with run_lock(args.out):
        return _run_locked(args)


def _run_locked(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .._io import check_run_folder
    from ..data import DataConfig, load_dataset
    from ..data.scale_detection import dataset_task, is_task_dataset
    from ..pooling import pooling_report
    from ..probes import balanced_probes, task_perturbation

    if args.n_shuffles < 0 or args.init_shuffles < 0:
        raise ValueError("--n-shuffles and --init-shuffles must be >= 0")
    if args.init_checkpoint and not args.checkpoint:
        raise ValueError("--init-checkpoint goes with --checkpoint (with --model the net is "
                         "already at initialization)")
    meta: dict = {}
    init_model = None
    if args.checkpoint:
        model, tcfg, info = _load(args.checkpoint)
        if args.data is None:
            _check_task_named(Path(args.checkpoint), tcfg.data)
        # The run's own split; with --data naming the same dataset with other options (a
        # generated task's), its P and seed too: they fix the task's test split.
        if args.data is None:
            data_cfg = tcfg.data
        elif _base(args.data) == _base(tcfg.data.name):
            data_cfg = dataclasses.replace(tcfg.data, name=args.data)
        else:
            data_cfg = DataConfig(name=args.data)
        meta.update(model=tcfg.model, checkpoint=str(args.checkpoint), epoch=info.get("epoch"))
        if args.init_checkpoint:
            init_model, icfg, _ = _load(args.init_checkpoint)
            if icfg.model != tcfg.model or icfg.model_kwargs != tcfg.model_kwargs:
                raise ValueError(f"--init-checkpoint holds {icfg.model}({icfg.model_kwargs}), "
                                 f"--checkpoint {tcfg.model}({tcfg.model_kwargs}): give the "
                                 f"same net")
    else:
        model = None
        data_cfg = DataConfig(name=args.data or "mnist-embedded")
        meta.update(model=args.model, model_seed=args.model_seed)
    data_cfg = dataclasses.replace(data_cfg, root=args.data_root or data_cfg.root,
                                   download=not args.no_download)
    data_name = data_cfg.name
    ds = load_dataset(data_cfg)
    test = ds.x_test is not None
    x, y = (ds.x_test, ds.y_test) if test else (ds.x_train, ds.y_train)
    perturbation = args.perturbation
    if is_task_dataset(data_name):
        # The experiment's conventions: class-balanced probes, the task's pixel move.
        task = dataset_task(data_name, data_cfg.P, data_cfg.seed)
        x = balanced_probes(x, y, args.n_probes)
        perturbation = perturbation or task_perturbation(data_name)
        meta.update(probes=f"{'test' if test else 'train'} split, balanced across the classes",
                    task=task.to_dict())
    perturbation = perturbation or "diffeo"
    n_probes = len(x) if args.n_probes is None else min(args.n_probes, len(x))
    if model is None:
        from ..models import create_model

        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
            torch.manual_seed(args.model_seed)
            model = create_model(args.model, in_channels=x.shape[1], num_classes=ds.num_classes)
    hint = (f"omit --data to use the checkpoint's own dataset {tcfg.data.name!r}"
            if args.checkpoint else "choose a --data whose samples it takes")
    _check_fits(model, meta["model"], x, data_name, hint)
    if init_model is not None:
        _check_fits(init_model, meta["model"], x, data_name, hint)
    meta.update(data=data_name, label=meta.get("model"))
    layers = ([s.strip() for s in args.layers.split(",") if s.strip()]
              if "," in args.layers else args.layers)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kw = dict(layers=layers, perturbation=perturbation, n_probes=n_probes,
              batch_size=args.batch_size, seed=args.seed, device=device,
              first_layer=not args.no_first_layer, outputs=args.shuffle_outputs,
              denominator=args.denominator, progress=not args.no_progress)
    out = Path(args.out)
    report = pooling_report(model, x, n_shuffles=args.n_shuffles, meta={**meta, "state":
                            "trained" if args.checkpoint else "init"}, **kw)
    check_run_folder(out)  # deleted while measuring: fail, do not re-create half a result
    written = report.save(out, fmt=args.format)
    init = None
    if init_model is not None:
        init = pooling_report(init_model, x, n_shuffles=args.init_shuffles,
                              meta={**meta, "checkpoint": str(args.init_checkpoint),
                                    "state": "init"}, **kw)
        written += init.save(out, prefix="init_", fmt=args.format)
    for path in written:
        print(f"wrote {path}")
    if not args.no_plot:
        from ..plots.pooling import plot_pooling, plot_spectra

        has_spatial = report.spectra.to_frame().eigenvalue.notna().any()
        if has_spatial:
            plot_spectra(report.spectra, init.spectra if init is not None else None,
                         labels=("trained" if args.checkpoint else "init", "init"),
                         path=out / "spectra.png")
            print(f"wrote {out / 'spectra.png'}")
        plot_pooling(report, init, path=out / "pooling.png")
        print(f"wrote {out / 'pooling.png'}")
    t = report.to_frame()
    conv = t[t.homogeneous_fraction.notna()]
    print(json.dumps({
        "layers": len(t), "n_shuffles": args.n_shuffles,
        "homogeneous_fraction": {r.layer: round(float(r.homogeneous_fraction), 4)
                                 for r in conv.itertuples()},
        "output": {"D": float(t.D.iloc[-1]), "D_shuffled": float(t.D_shuffled.iloc[-1]),
                   "channel_fraction": float(t.channel_fraction.iloc[-1])},
    }))
    return 0


def _check_fits(model, name: str, x, data_name: str, hint: str) -> None:
    """A clear error when ``model`` cannot take the samples ``x: [M, C, *spatial]`` (a 1D
    net given images, a 2D net given signals, a wrong length): one forward pass of two
    probes (eval mode, no grad, RNG untouched), the model's mode restored."""
    import torch
    from torch import nn

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    dims = {m.weight.dim() - 2 for m in model.modules() if isinstance(m, convs)}
    shape = list(x.shape[1:])
    if len(dims) == 1 and dims != {x.dim() - 2}:
        (d,) = dims
        want = {1: "signals [C, L]", 2: "images [C, H, W]"}.get(d, f"{d}D inputs")
        raise ValueError(f"{name} is a {d}D network: it takes {want}, but dataset "
                         f"{data_name!r} holds samples of shape {shape}; {hint}")
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x[:2])
    except (RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{name} cannot take the samples of dataset {data_name!r} (shape "
                         f"{shape}): {first}; {hint}") from None
    finally:
        model.train(was_training)


def _check_task_named(path: Path, data_cfg) -> None:
    """Refuse a checkpoint of a `diffeosense scale-detection` unit written before the units
    named their task: its dataset is the bare ``scale-detection-1d`` (the default task), not
    the run's; the error gives the ``--data`` of the run's task (from its config.json)."""
    if data_cfg.name.lower() != "scale-detection-1d":
        return
    # root/units/<unit>/train/checkpoints/<name>.pt (the layout before the sweep engine) or
    # root/runs/<run hash>/train/checkpoints/<name>.pt (today's; its checkpoints name their
    # task, and an old unit of another config is refused rather than moved there)
    up = path.resolve().parents
    if len(up) < 5 or up[3].name not in ("units", "runs") or not (up[4] / "config.json"
                                                                   ).exists():
        return
    from ..data.scale_detection import dataset_task
    from ..experiments.scale_detection import ScaleDetectionExperiment

    try:
        exp = ScaleDetectionExperiment.from_dict(
            json.loads((up[4] / "config.json").read_text())["config"])
    except (KeyError, TypeError, ValueError):
        return  # not a scale-detection run folder
    spec = exp.dataset_name()
    if dataset_task(spec, data_cfg.P, data_cfg.seed) != dataset_task(data_cfg.name, data_cfg.P,
                                                                     data_cfg.seed):
        raise ValueError(
            f"{path} was written by `diffeosense scale-detection` before its checkpoints named "
            f"their task: its dataset 'scale-detection-1d' is the default task, not the run's; "
            f"pass --data '{spec}' (the run's task, from {up[4] / 'config.json'})")
