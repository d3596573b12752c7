"""``diffeosense pooling``: spatial vs channel pooling of a trained (or initialized) network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_EXAMPLES = """examples:
  diffeosense pooling --checkpoint runs/v/checkpoints/last.pt \\
      --init-checkpoint runs/v/checkpoints/init.pt --data mnist-embedded --out runs/v/pooling
  diffeosense pooling --model vgg11 --data cifar10 --n-shuffles 5 --out runs/vgg-init-pooling

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
                   "dataset, else mnist-embedded)")
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
    p.add_argument("--n-probes", type=int, default=500, help="test images used (default 500)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="probes per forward pass; does not change the result (default 128)")
    p.add_argument("--perturbation", default="diffeo",
                   help="perturbation spec (default diffeo: 1 px displacement, cut 3)")
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
    import torch

    from .._io import check_run_folder
    from ..data import DataConfig, load_dataset
    from ..pooling import pooling_report

    if args.n_shuffles < 0 or args.init_shuffles < 0:
        raise ValueError("--n-shuffles and --init-shuffles must be >= 0")
    if args.init_checkpoint and not args.checkpoint:
        raise ValueError("--init-checkpoint goes with --checkpoint (with --model the net is "
                         "already at initialization)")
    meta: dict = {}
    init_model = None
    if args.checkpoint:
        model, tcfg, info = _load(args.checkpoint)
        data_name = args.data or tcfg.data.name
        meta.update(model=tcfg.model, checkpoint=str(args.checkpoint), epoch=info.get("epoch"))
        if args.init_checkpoint:
            init_model, icfg, _ = _load(args.init_checkpoint)
            if icfg.model != tcfg.model or icfg.model_kwargs != tcfg.model_kwargs:
                raise ValueError(f"--init-checkpoint holds {icfg.model}({icfg.model_kwargs}), "
                                 f"--checkpoint {tcfg.model}({tcfg.model_kwargs}): give the "
                                 f"same net")
    else:
        model = None
        data_name = args.data or "mnist-embedded"
        meta.update(model=args.model, model_seed=args.model_seed)
    ds = load_dataset(DataConfig(name=data_name, root=args.data_root,
                                 download=not args.no_download))
    x = ds.x_test if ds.x_test is not None else ds.x_train
    if model is None:
        from ..models import create_model

        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
            torch.manual_seed(args.model_seed)
            model = create_model(args.model, in_channels=x.shape[1], num_classes=ds.num_classes)
    meta.update(data=data_name, label=meta.get("model"))
    layers = ([s.strip() for s in args.layers.split(",") if s.strip()]
              if "," in args.layers else args.layers)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kw = dict(layers=layers, perturbation=args.perturbation, n_probes=args.n_probes,
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
