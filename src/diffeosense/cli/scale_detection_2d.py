"""``diffeosense scale-detection-2d``: the 2D task on the paper's deep nets (Figs. 8, 9)."""

from __future__ import annotations

import argparse

from . import _options as _o

_EXAMPLES = """examples:
  diffeosense scale-detection-2d --preset quick --out runs      # 4 nets, minutes on a CPU
  diffeosense scale-detection-2d --preset paper --device cuda --out runs
  diffeosense scale-detection-2d --preset quick --models lenet vgg11 alexnet --seeds 2
  diffeosense scale-detection-2d --preset paper --lr 0.05 vgg11=0.01 --out runs  # per-net lr

Writes runs/scale-detection-2d-<hash>/ (config.json, runs/<unit hash>/, sensitivity.csv,
summary.csv, scale_detection_2d.png); the units train in parallel (--workers), and a re-run
skips finished units and resumes training.
The same pieces by hand:
  diffeosense train --model vgg11 --data scale-detection-2d --P 1024 --lr 0.05 --epochs 300 \\
      --out runs/vgg11-sd2d
  diffeosense measure --checkpoint runs/vgg11-sd2d/checkpoints/best.pt --out runs/vgg11-sd2d/sens
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.scale_detection_2d import PRESETS

    p = subparsers.add_parser(
        "scale-detection-2d",
        help="train deep nets on the 2D scale-detection task; test error vs D, G, R",
        description="The paper's 2D scale-detection experiment: train each net (one output, "
        "hinge loss, SGD lr 0.05, momentum 0.9, weight decay 5e-4, cosine, best checkpoint) "
        "on d x d images with two active pixels, measure D_k, G_k, R_k at every layer with the "
        "task's pixel move and norm-matched noise, and plot test error against D, G, R at the "
        "output and the sensitivities by layer.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="quick (default: P=1024, test 1024, 20 epochs, VGG11 at lr 0.01; for "
                   "a CPU) or paper (P=1024, test 4096, 300 epochs)")
    p.add_argument("--models", nargs="+", default=None,
                   help="registered model names (default lenet vgg11 vgg11bn resnet18)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds 0..n-1 (default 1)")
    p.add_argument("--epochs", type=int, default=None, help="epoch budget")
    p.add_argument("--P", type=int, default=None,
                   help="training pairs (test: the preset's test size, 4 P for paper)")
    p.add_argument("--lr", nargs="+", default=None, metavar="LR|MODEL=LR",
                   help="learning rate of every net, and/or of named nets (e.g. --lr 0.05 "
                   "vgg11=0.01). A plain LR replaces the preset's rates for every net not "
                   "named; MODEL=LR alone changes that net's and keeps the preset's others")
    p.add_argument("--n-probes", type=int, default=None, help="probes (balanced)")
    _o.add_device_option(p, "cpu")
    _o.add_backend_options(p, workers_help="units (model, seed) trained at once in local "
                           "processes (default: the number of cores; 1: one after the other "
                           "in this process); slurm: default array parallelism")
    _o.add_output_options(p, out_help="parent of the run folder (default runs)",
                          out_default="runs", formats=False, plot_help="no figure",
                          progress_help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..experiments.scale_detection_2d import preset, run

    _o.check_out(args.out)
    over: dict = {"device": args.device}
    if args.models:
        over["models"] = tuple(args.models)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        over["seeds"] = tuple(range(args.seeds))
    for key, name in (("epochs", "epochs"), ("P", "train_size"), ("n_probes", "n_probes")):
        if getattr(args, key) is not None:
            over[name] = getattr(args, key)
    cfg = preset(args.preset, **over)
    if args.lr:
        lrs = _parse_lr(args.lr)
        cfg = cfg.with_learning_rates(lrs.get("lr"), lrs.get("lr_by_model"))
    backend, workers, options = _o.backend_from_args(args)
    _o.check_device(cfg.device, backend)
    try:
        result = run(cfg, args.out, progress=not args.no_progress, backend=backend,
                     workers=workers, **options)
    except KeyboardInterrupt:
        raise _o.interrupted_units(args.out) from None
    print(f"run folder: {result.out_dir}")
    cols = ["model", "seed", "epochs_run", "best_epoch", "test_error", "D", "G", "R",
            "D_init", "G_init", "R_init"]
    print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if not args.no_plot:
        from ..plots.scale_detection_2d import save_result_figure

        print(f"figure: {save_result_figure(result)}")
    return 0


def _parse_lr(items: list[str]) -> dict:
    """``["0.05", "vgg11=0.01"]`` -> ``{"lr": 0.05, "lr_by_model": {"vgg11": 0.01}}``."""
    out: dict = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            lr = float(value)
        except ValueError:
            raise ValueError(f"--lr takes LR or MODEL=LR (e.g. --lr 0.05 vgg11=0.01), got "
                             f"{item!r}") from None
        if sep:
            out.setdefault("lr_by_model", {})[name] = lr
        elif "lr" in out:
            raise ValueError(f"--lr got two rates for every net ({out['lr']} and {lr}); give "
                             f"one, and MODEL=LR for the others")
        else:
            out["lr"] = lr
        if not lr > 0:
            raise ValueError(f"--lr must be > 0, got {item!r}")
    return out
