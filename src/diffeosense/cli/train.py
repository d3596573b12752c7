"""``diffeosense train``: train one of the paper's networks with checkpoints and resumption."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import _options as _o

_EXAMPLE = """examples:
  diffeosense train --model lenet --data mnist-embedded --epochs 5 --out runs/lenet
  diffeosense train --model vgg11bn --data cifar10 --epochs 200 --noise 1 --augment --out runs/v
  diffeosense train --model simplecnn --model-kw depth=6 width=32 pooling=avg --data mnist \\
      --P 1024 --out runs/s
  diffeosense train ... --out runs/v --resume      # continue a killed run exactly
  diffeosense train --model vgg11 --data scale-detection-2d --P 1024 --lr 0.05 --epochs 300 \
      --out runs/sd2d    # the 2D task: one output, hinge loss
  diffeosense train --model simplecnn --data mnist-embedded --epochs 8 --out runs/t \
      --track-sensitivity log --track-probes 100 --log tensorboard runs/t/tb
  diffeosense train --model resnet18 --data folder:photos --resize 64 --crop 64 --out runs/p
  diffeosense train --model lenet --data my_digits.npz --epochs 5 --out runs/d  # x, y arrays
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a network (paper's recipe), with checkpoints and exact --resume",
        description="Train a registered model on a dataset with the paper's recipe (SGD "
        "momentum 0.9, lr 0.1, weight decay 5e-4 on weights only, cosine schedule, batch 128; "
        "Adam for fully connected nets). Writes config.json, metrics.jsonl, summary.json and "
        "checkpoints/{init,epoch_XXXX,best,last}.pt into --out.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="model spec (default simplecnn). "
                   + _o.model_spec_help())  # fmt: skip
    _o.add_model_kw_option(p)
    p.add_argument("--data", default=None,
                   help="dataset (default mnist-embedded; scale-detection: P pairs, test 4P). "
                   + _o.DATA_SPEC_HELP)  # fmt: skip
    p.add_argument("--data-root", default=None,
                   help="folder of the torchvision datasets (default $DIFFEOSENSE_DATA or "
                   "~/.cache/diffeosense/data)")  # fmt: skip
    p.add_argument("--no-download", action="store_true", default=None,
                   help="never try to download a missing dataset")
    _o.add_data_options(p)
    p.add_argument("--P", type=int, default=None,
                   help="training-set size: a seeded random subset (default: all)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of the P-subset (default 0)")
    p.add_argument("--augment", action="store_true", default=None,
                   help="random crop (padding 4) and horizontal flip of training images")
    p.add_argument("--noise", type=float, default=None,
                   help="L2 norm s of Gaussian noise added to each normalized image, fresh "
                   "at every load (default 0)")  # fmt: skip
    p.add_argument("--noise-on", default=None, choices=["train", "test", "both", "none"],
                   help="which split gets the noise (default both, as the paper)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    p.add_argument("--optimizer", default=None, choices=["auto", "sgd", "adam"],
                   help="auto: Adam for fully connected fc* nets, SGD otherwise")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.1 for SGD, 1e-3 for Adam)")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay on weights only (default 5e-4 for SGD, 0 for Adam)")
    p.add_argument("--schedule", default=None, choices=["cosine", "constant"],
                   help="learning-rate schedule over the epochs (default cosine)")
    p.add_argument("--loss", default=None, choices=["cross_entropy", "hinge"],
                   help="hinge: binary tasks with labels +-1 and a scalar output (default: "
                   "hinge for the scale-detection data, cross_entropy otherwise)")
    p.add_argument("--stop-at-zero-loss", action="store_true", default=None,
                   help="stop once an epoch's training loss is exactly zero")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the initialization and of every epoch's randomness")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--keep-every", type=int, default=None,
                   help="keep a checkpoint every K epochs (0: only init/best/last; default 1)")
    _o.add_fast_path_options(p, "fast path (opt-in, for GPUs; the default is the plain fp32 "
                             "loop; resumption stays bit-exact)")
    p.add_argument("--config", default=None,
                   help="JSON file with a TrainConfig (e.g. a run's config.json); the options "
                   "given on the command line override its values")
    p.add_argument("--out", default=None,
                   help="run folder (default runs/train-<model>-<data>-<config hash>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group(
        "sensitivity tracking", "measure D, G, R of the chosen layers at scheduled epochs, on "
        "fixed probes with the same diffeos and noise every time (weights unchanged); writes "
        "track.<format> and track.meta.json into --out, continued by --resume")
    t.add_argument("--track-sensitivity", metavar="SCHEDULE", default=None,
                   help="epochs to measure: a list such as 0,1,2,4, every:K (0, K, 2K, ... and "
                   "the last), or log (0, 1, 2, 4, 8, ... and the last)")
    t.add_argument("--track-probes", type=int, default=None, metavar="N",
                   help=f"probe images, the first N of the test split (default "
                   f"{_default_probes()})")
    t.add_argument("--track-layers", default="all", metavar="SPEC",
                   help="'all' (default), kinds joined by '+' (conv+activation) or "
                   "comma-separated layer names")
    t.add_argument("--track-seed", type=int, default=0,
                   help="seed of the probes' diffeos and noise (default 0)")
    t.add_argument("--track-channels", action="store_true",
                   help="also the channel-averaged representation (rows with view "
                   "channel-mean; plot them with diffeosense plot --view channel-mean)")
    t.add_argument("--track-format", choices=["csv", "parquet"], default="csv",
                   help="table format (default csv)")
    t.add_argument("--log", nargs=2, metavar=("BACKEND", "DIR"), default=None,
                   help="also log the tracked scalars: 'tensorboard DIR' (needs pip install "
                   "'diffeosense[tensorboard]')")
    p.set_defaults(func=run)


def _default_probes() -> int:
    from ..tracking import DEFAULT_TRACK_PROBES

    return DEFAULT_TRACK_PROBES


def _tracker_from_args(args: argparse.Namespace):
    """The SensitivityTracker the --track-* options ask for, or None."""
    if args.track_sensitivity is None:
        given = [o for o, v in (("--track-probes", args.track_probes), ("--log", args.log),
                                ("--track-channels", args.track_channels or None))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} given without --track-sensitivity; add "
                             f"one (e.g. --track-sensitivity log)")
        return None
    from ..tracking import DEFAULT_TRACK_PROBES, SensitivityTracker, TrackConfig
    from ._options import layers_option

    tb = None
    if args.log is not None:
        backend, tb = args.log
        if backend != "tensorboard":
            raise ValueError(f"--log supports 'tensorboard DIR', got {backend!r}")
    cfg = TrackConfig(
        schedule=args.track_sensitivity, layers=layers_option(args.track_layers), seed=args.track_seed,
        n_probes=args.track_probes if args.track_probes is not None else DEFAULT_TRACK_PROBES,
        channels=args.track_channels, format=args.track_format,
    )  # fmt: skip
    try:
        return SensitivityTracker(cfg, tensorboard=tb)
    except ImportError as e:  # the CLI reports it as one line, with the install command
        raise ValueError(str(e)) from None


# Command-line option -> TrainConfig key ("data." for DataConfig keys). Every option's
# argparse default is None: an option is "given" exactly when it is not None, and the
# defaults live in one place, the dataclasses.
_OPTIONS = {
    "model": "model", "model_kw": "model_kwargs", "epochs": "epochs",
    "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr", "momentum": "momentum",
    "weight_decay": "weight_decay", "schedule": "schedule", "loss": "loss",
    "stop_at_zero_loss": "stop_at_zero_loss", "seed": "seed", "device": "device",
    "keep_every": "keep_every", "data": "data.name", "data_root": "data.root", "P": "data.P",
    "data_seed": "data.seed", "augment": "data.augment", "noise": "data.noise",
    "noise_on": "data.noise_on", "no_download": "data.download", "resize": "data.resize",
    "crop": "data.crop", "normalize": "data.normalize", "precision": "precision",
    "channels_last": "channels_last", "compile": "compile",
}  # fmt: skip


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The config values that the command line sets explicitly, by config key."""
    out: dict[str, Any] = {}
    for opt, key in _OPTIONS.items():
        value = getattr(args, opt, None)
        if value is None:
            continue
        if opt == "model_kw":
            value = _o.parse_model_kw(value)
        elif opt == "no_download":
            value = not value
        out[key] = value
    return out


def _config_from_args(args: argparse.Namespace):
    """The TrainConfig: ``--config FILE`` (or the defaults), then every option given on the
    command line on top (an explicit flag always wins, and says so on stderr)."""
    from ..train import TrainConfig

    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config: no file {path}")
        try:
            blob = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path} is not valid JSON ({e})") from None
        base = TrainConfig.from_dict(blob.get("config", blob)).to_dict()
    else:
        base = TrainConfig().to_dict()
    given = _given(args)
    for key, value in given.items():
        section, _, name = key.rpartition(".")
        target = base["data"] if section else base
        old, target[name] = target.get(name), value
        if args.config and key != "device" and old is not None and old != value:
            opt = next(o for o, k in _OPTIONS.items() if k == key).replace("_", "-")
            print(f"note: --{opt} {value!r} overrides {key}={old!r} of {args.config}",
                  file=sys.stderr)
    if "loss" not in given and not args.config and \
            str(base["data"]["name"]).startswith("scale-detection"):
        base["loss"] = "hinge"  # the task's labels are +-1, one output
    return TrainConfig.from_dict(base)


def _data_label(cfg) -> str:
    """The dataset in a folder name: its spec, a path shortened (``folder:a/cats`` ->
    ``folder-cats``)."""
    from ..data import parse_data_spec

    return parse_data_spec(cfg.data.name).label


def _folder_hash(cfg) -> str:
    """The config hash of the default run folder, without the data fields added later at
    their defaults (the folders of earlier runs are still found)."""
    from ..data.datasets import DATA_LATER_DEFAULTS
    from ..provenance import config_hash
    from ..train import TRAIN_LATER_DEFAULTS

    d = cfg.to_dict()
    for node, later in ((d["data"], DATA_LATER_DEFAULTS), (d, TRAIN_LATER_DEFAULTS)):
        for key, default in later.items():
            if node.get(key, default) == default:
                node.pop(key, None)
    return config_hash(d)


def run(args: argparse.Namespace) -> int:
    from ..train import train

    _o.check_out(args.out)
    cfg = _config_from_args(args)
    _o.check_device(cfg.device)
    tracker = _tracker_from_args(args)
    out = args.out or f"runs/train-{cfg.model}-{_data_label(cfg)}-{_folder_hash(cfg)}"
    try:
        res = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                    tracker=tracker)
    except KeyboardInterrupt:
        last = Path(out) / "checkpoints" / "last.pt"
        raise _o.interrupted(
            f"the last finished epoch is kept in {last}; continue with the same command and "
            f"--resume" if last.is_file() else f"no epoch finished, nothing was kept in {out}"
        ) from None
    finally:
        if tracker is not None:
            tracker.close()
    f = res.final or {}
    parts = [f"{cfg.model} on {cfg.data.name}: {len(res.history)} epochs ({res.stopped})"]
    if f:
        parts.append(f"train loss {f['train_loss']:.4g}, train error {f['train_error']:.4f}")
        if "test_error" in f:
            parts.append(f"test error {f['test_error']:.4f}")
    if res.best_epoch is not None:
        parts.append(f"best error {res.best_error:.4f} at epoch {res.best_epoch}")
    print("; ".join(parts), file=sys.stdout)
    print(f"run folder: {out}", file=sys.stdout)
    if tracker is not None and tracker.path is not None:
        print(f"sensitivity tracked at epochs {tracker.tracked_epochs}: {tracker.path} "
              f"(draw it with: diffeosense plot {tracker.path} --out track.png)")
    return 0
