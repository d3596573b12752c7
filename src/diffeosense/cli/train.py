"""``diffeosense train``: train one of the paper's networks with checkpoints and resumption."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_EXAMPLE = """examples:
  diffeosense train --model lenet --data mnist-embedded --epochs 5 --out runs/lenet
  diffeosense train --model vgg11bn --data cifar10 --epochs 200 --noise 1 --augment --out runs/v
  diffeosense train --model simplecnn --model-kw depth=6 width=32 pooling=avg --data mnist \\
      --P 1024 --out runs/s
  diffeosense train ... --out runs/v --resume      # continue a killed run exactly
  diffeosense train --model vgg11 --data scale-detection-2d --P 1024 --lr 0.05 --epochs 300 \
      --out runs/sd2d    # the 2D task: one output, hinge loss
"""


def _parse_kw(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model-kw expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v  # a bare string such as pooling=avg
    return out


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
    p.add_argument("--model", default="simplecnn", help="model name (see list below; "
                   "default simplecnn)")  # fmt: skip
    p.add_argument("--model-kw", nargs="*", metavar="KEY=VALUE",
                   help="extra model arguments, values parsed as JSON (e.g. depth=4 "
                   "pooling=avg)")  # fmt: skip
    p.add_argument("--data", default="mnist-embedded",
                   help="dataset: mnist-embedded (default, no download), cifar10, mnist, "
                   "fashion-mnist, svhn, scale-detection-2d[:size=28,xi=14,gap=2] (P pairs, "
                   "test 4P), scale-detection-1d[:size=..]")  # fmt: skip
    p.add_argument("--data-root", default=None,
                   help="folder of the torchvision datasets (default $DIFFEOSENSE_DATA or "
                   "~/.cache/diffeosense/data)")  # fmt: skip
    p.add_argument("--no-download", action="store_true",
                   help="never try to download a missing dataset")
    p.add_argument("--P", type=int, default=None,
                   help="training-set size: a seeded random subset (default: all)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the P-subset (default 0)")
    p.add_argument("--augment", action="store_true",
                   help="random crop (padding 4) and horizontal flip of training images")
    p.add_argument("--noise", type=float, default=0.0,
                   help="L2 norm s of Gaussian noise added to each normalized image, fresh "
                   "at every load (default 0)")  # fmt: skip
    p.add_argument("--noise-on", default="both", choices=["train", "test", "both", "none"],
                   help="which split gets the noise (default both, as the paper)")
    p.add_argument("--epochs", type=int, default=10, help="number of epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--optimizer", default="auto", choices=["auto", "sgd", "adam"],
                   help="auto: Adam for fully connected fc* nets, SGD otherwise")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.1 for SGD, 1e-3 for Adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay on weights only (default 5e-4 for SGD, 0 for Adam)")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"],
                   help="learning-rate schedule over the epochs (default cosine)")
    p.add_argument("--loss", default=None, choices=["cross_entropy", "hinge"],
                   help="hinge: binary tasks with labels +-1 and a scalar output (default: "
                   "hinge for the scale-detection data, cross_entropy otherwise)")
    p.add_argument("--stop-at-zero-loss", action="store_true",
                   help="stop once an epoch's training loss is exactly zero")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialization and of every epoch's randomness")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--keep-every", type=int, default=1,
                   help="keep a checkpoint every K epochs (0: only init/best/last; default 1)")
    p.add_argument("--config", default=None,
                   help="JSON file with a TrainConfig (e.g. a run's config.json); command-line "
                   "options are ignored except --out, --resume, --device, --no-progress")
    p.add_argument("--out", default=None,
                   help="run folder (default runs/train-<model>-<data>-<config hash>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config_from_args(args: argparse.Namespace):
    from ..data import DataConfig
    from ..train import TrainConfig

    if args.config:
        blob = json.loads(Path(args.config).read_text())
        cfg = TrainConfig.from_dict(blob.get("config", blob))
        cfg.device = args.device
        return cfg
    data = DataConfig(
        name=args.data, root=args.data_root, P=args.P, augment=args.augment, noise=args.noise,
        noise_on=args.noise_on, seed=args.data_seed, download=not args.no_download,
    )  # fmt: skip
    return TrainConfig(
        model=args.model, model_kwargs=_parse_kw(args.model_kw), data=data, epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        loss=args.loss or ("hinge" if args.data.startswith("scale-detection") else
                           "cross_entropy"),
        seed=args.seed, device=args.device, keep_every=args.keep_every,
        stop_at_zero_loss=args.stop_at_zero_loss,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..provenance import config_hash
    from ..train import train

    cfg = _config_from_args(args)
    out = args.out or f"runs/train-{cfg.model}-{cfg.data.name}-{config_hash(cfg)}"
    res = train(cfg, out, resume=args.resume, progress=not args.no_progress)
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
    return 0
