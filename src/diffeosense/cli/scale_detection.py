"""``diffeosense scale-detection``: the paper's 1D scale-detection nets against the theory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import _options as _o

_EXAMPLES = """examples:
  diffeosense scale-detection                          # small preset, 3 seeds, a few minutes
  diffeosense scale-detection --preset small-stride1   # the unstrided net, same regime
  diffeosense scale-detection --preset lazy            # the lazy regime, for the contrast
  diffeosense scale-detection --compare-activations    # relu and tanh runs, G_k side by side
  diffeosense scale-detection --seeds 5 --out runs     # re-uses the seeds already finished
  diffeosense scale-detection --preset paper --out runs    # H = 1000, 10 seeds: a big box
  diffeosense scale-detection --set xi=16 train_size=1024 depths=[16,6] --out runs

Writes runs/scale-detection-<hash>/ (config.json, units/, sensitivity.csv, aggregate.csv,
theory.csv, exponents.csv, summary.json, scale_detection.png); re-running the same command
skips the finished (stride, seed) units and resumes a killed training run.
"""


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string, e.g. activation=tanh
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.scale_detection import PRESETS, ScaleDetectionExperiment

    fields = ", ".join(f.name for f in __import__("dataclasses").fields(ScaleDetectionExperiment)
                       if f.name != "preset")
    p = subparsers.add_parser(
        "scale-detection",
        help="train 1D CNNs with and without stride on the scale-detection task; D, G, R vs "
        "depth against the theory of spatial pooling",
        description="The paper's 1D scale-detection experiment (Tomasini et al. 2022, Fig. 7): "
        "for each stride (1 and F) and seed, build the 1D CNN, measure D_k, G_k, R_k at every "
        "layer at initialization, train it (hinge loss, plain SGD, until zero training loss "
        "or the epoch budget), measure again; set the curves beside the exact idealized "
        "pooling net and fit the exponents on the activation layers k >= fit_k_min.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=list(PRESETS),
                   help="small (default: the feature-learning regime, block task, stride 2, "
                   "N=128, H=128, minutes on a CPU), small-stride1 (the unstrided net, distance "
                   "task), paper (small at H=1000, 10 seeds), lazy (standard parametrization, "
                   "the earlier setting)")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of network seeds 0..n-1 (default: the preset's, 3)")
    p.add_argument("--out", default="runs",
                   help="parent folder of the run folder scale-detection-<hash> (default runs)")
    p.add_argument("--width", type=int, default=None, help="channels H of every layer")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget (training stops earlier at zero training loss)")
    p.add_argument("--lr", type=float, default=None,
                   help="base SGD learning rate (default 0.01; times H when lr_scaling=width)")
    p.add_argument("--n-probes", type=int, default=None,
                   help="test pairs used as probes (default: the whole test split)")
    p.add_argument("--activation", choices=["relu", "tanh"], default=None,
                   help="activation of every layer (default relu)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", dest="overrides",
                   help=f"override any config field, values parsed as JSON; fields: {fields}")
    p.add_argument("--device", default=None,
                   help="cpu (default), cuda, cuda:N: where to train and measure")
    p.add_argument("--compare-activations", action="store_true",
                   help="run the config with relu and with tanh and draw D_k, G_k, R_k side by "
                   "side (activations.png, activations_exponents.csv in --out)")
    p.add_argument("--no-plot", action="store_true", help="do not draw scale_detection.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _o.add_backend_options(p, workers_help="units (stride, seed) trained at once in local "
                           "processes (default: the number of cores)")
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace):
    """The :class:`ScaleDetectionExperiment` that the command line asks for."""
    from ..experiments.scale_detection import preset

    over = _parse_set(args.overrides)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        over["seeds"] = tuple(range(args.seeds))
    for key in ("width", "epochs", "lr", "n_probes", "activation", "device"):
        value = getattr(args, key)
        if value is not None:
            over[key] = value
    try:
        return preset(args.preset, **over)
    except TypeError as e:
        raise ValueError(f"bad --set field: {e}") from None


def _run(args: argparse.Namespace) -> int:
    from ..experiments.scale_detection import format_exponents, run

    _o.check_out(args.out)
    cfg = config_from_args(args)
    backend, workers, options = _o.backend_from_args(args)
    _o.check_device(cfg.device, backend)
    try:
        if args.compare_activations:
            return _compare_activations(cfg, args)
        result = run(cfg, args.out, progress=not args.no_progress, backend=backend,
                     workers=workers, **options)
    except KeyboardInterrupt:
        raise _o.interrupted_units(args.out) from None
    print(f"run folder: {result.out_dir}")
    print(f"units computed: {len(result.units_run)}, found finished: {len(result.units_skipped)}")
    for u in result.units:
        print(f"  s={u['stride']} seed={u['seed']}: {u['epochs_run']} epochs, stopped at "
              f"{u['stopped']}, train loss {u['train_loss']:.3g}, test error "
              f"{u['test_error']:.3f}")
    print("exponents (activation layers; fit: geometric mean over seeds +- residual SE; "
          "seeds: mean +- SE of per-seed fits; theory(N): exact idealized net, same window):")
    print(format_exponents(result.exponents))
    if not args.no_plot:
        from ..plots.scale_detection import save_result_figure

        print(f"figure: {save_result_figure(result)}")
    return 0


def _compare_activations(cfg, args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    import pandas as pd

    from .. import _io
    from ..experiments.scale_detection import format_exponents, run
    from ..provenance import provenance

    backend, workers, options = _o.backend_from_args(args)
    results = []
    for act in ("relu", "tanh"):
        res = run(dataclasses.replace(cfg, activation=act), args.out,
                  progress=not args.no_progress, backend=backend, workers=workers, **options)
        print(f"{act}: run folder {res.out_dir}")
        print(format_exponents(res.exponents))
        results.append(res)
    table = pd.concat([r.exponents.assign(activation=r.config.activation,
                                          run=r.out_dir.name) for r in results])
    out = Path(args.out)
    meta = {"format": "diffeosense.scale-detection-activations/1",
            "activations": [r.config.activation for r in results],
            "runs": [str(r.out_dir) for r in results],
            "config": cfg.to_dict(), "provenance": provenance()}
    print(f"table: {_io.write_table(out / 'activations_exponents.csv', table, meta)}")
    if not args.no_plot:
        from ..plots.scale_detection import plot_activation_comparison

        plot_activation_comparison(results, path=out / "activations.png")
        print(f"figure: {out / 'activations.png'}")
    return 0
