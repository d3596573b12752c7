"""``diffeosense pooling``: spatial vs channel pooling of a trained (or initialized) network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _options as _o

_EXAMPLES = """examples:
  diffeosense pooling --checkpoint runs/v/checkpoints/last.pt \\
      --init-checkpoint runs/v/checkpoints/init.pt --data mnist-embedded --out runs/v/pooling
  diffeosense pooling --model vgg11 --data cifar10 --n-shuffles 5 --out runs/vgg-init-pooling
  ck=runs/scale-detection-<hash>/runs/<unit hash>/train/checkpoints  # a 1D scale-detection unit
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


# The measurement options pooling takes (pooling_report's own are the shuffling ones).
_MEASURED = ["layers", "n_probes", "batch_size", "perturbation", "seed", "denominator"]


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
    _o.add_source_options(
        p, model_first=False, model_help="a model spec, at its seeded initialization (or with --weights)",
        data_help="dataset (default: the checkpoint's dataset and split, else "
        "mnist-embedded); the checkpoint's P and data seed are kept when --data names its "
        "dataset with other options (they fix a scale-detection task's split)")
    p.add_argument("--init-checkpoint", default=None,
                   help="the same net at initialization (e.g. checkpoints/init.pt): its spectra "
                   "and D/G/R are drawn beside the trained ones")
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
    _o.add_measure_options(p, _MEASURED, types={"n_probes": _o.n_probes_or_all}, help={
        "n_probes": "test images used, or 'all' (default 500; on a scale-detection task the "
        "first of the class-balanced test split)",
        "seed": "seed of the diffeos, noise and permutations (default 0)"})
    _o.add_device_option(p)
    _o.add_output_options(p, plot_help="skip the PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import run_lock

    _o.check_out(args.out)
    _o.check_device(args.device)
    if args.n_shuffles < 0 or args.init_shuffles < 0:
        raise ValueError("--n-shuffles and --init-shuffles must be >= 0")
    if args.init_checkpoint and not args.checkpoint:
        raise ValueError("--init-checkpoint goes with --checkpoint (with --model the net is "
                         "already at initialization)")
    # The lock checks --out (not writable, in use) before any work; a folder it made is
    # removed again if the command fails before writing into it.
    try:
        with run_lock(args.out):
            return _run_locked(args)
    except KeyboardInterrupt:
        raise _o.interrupted(f"nothing more was written to {args.out}") from None


def _run_locked(args: argparse.Namespace) -> int:
    from .._io import check_run_folder
    from ..pooling import pooling_report
    from ..sources import check_fits, resolve_data, resolve_device, resolve_model
    from .measure import check_other_model

    source = _o.model_source(args)
    if source.info.get("kind") in ("torchscript", "export"):
        raise ValueError(f"{source.checkpoint} is a {source.info['kind']} file: pooling shuffles "
                         f"the channels of the net's convolution modules, which a compiled "
                         f"graph does not have; give the architecture and its weights "
                         f"(--model SPEC --weights FILE)")
    if source.train_config is not None and args.data is None:
        _check_task_named(source.checkpoint, source.train_config.data)
    check_other_model(Path(args.out), source.meta, ("pooling.meta.json", "pooling.json"))
    init_model = None
    if args.init_checkpoint:
        init_source = resolve_model(checkpoint=args.init_checkpoint)
        icfg, tcfg = init_source.train_config, source.train_config
        if icfg is None or tcfg is None:
            raise ValueError("--init-checkpoint and --checkpoint must both be `diffeosense "
                             "train` checkpoints (of the same net)")
        if icfg.model != tcfg.model or icfg.model_kwargs != tcfg.model_kwargs:
            raise ValueError(f"--init-checkpoint holds {icfg.model}({icfg.model_kwargs}), "
                             f"--checkpoint {tcfg.model}({tcfg.model_kwargs}): give the "
                             f"same net")
        init_model = init_source.model
    data = resolve_data(args.data, source, root=args.data_root, download=not args.no_download,
                        n_probes=args.n_probes, options=_o.data_options(args))
    x = data.probes
    model = source.build(data)
    hint = _o.fit_hint(source)
    check_fits(model, source.name, x, data.name, hint)
    if init_model is not None:
        check_fits(init_model, source.name, x, data.name, hint)
    meta = {**source.meta, **data.meta, "label": source.name}
    kw = dict(_o.measure_options(args, _MEASURED), device=resolve_device(args.device),
              first_layer=not args.no_first_layer, outputs=args.shuffle_outputs,
              progress=not args.no_progress)
    kw["perturbation"] = kw["perturbation"] or data.perturbation
    kw["n_probes"] = len(x)
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


def _check_task_named(path: Path, data_cfg) -> None:
    """Refuse a checkpoint of a `diffeosense scale-detection` unit written before the units
    named their task: its dataset is the bare ``scale-detection-1d`` (the default task), not
    the run's; the error gives the ``--data`` of the run's task (from its config.json)."""
    if data_cfg.name.lower() != "scale-detection-1d":
        return
    # root/units/<unit>/train/checkpoints/<name>.pt (the layout before the units were sweep
    # runs), or root/runs/<hash>/train/checkpoints/<name>.pt
    up = path.resolve().parents
    if len(up) < 5 or up[3].name not in ("units", "runs") \
            or not (up[4] / "config.json").exists():
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
