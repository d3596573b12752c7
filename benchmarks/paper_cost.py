"""What ``diffeosense reproduce noisy-training --scale paper`` costs: training FLOPs measured per
net, converted to GPU-hours under a stated throughput, with a measured CPU epoch as a check.

Not a speed benchmark (nothing is compared): the estimate behind the paper preset's GPU-hours.

* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` counts the forward and backward of one
  CIFAR-10 batch (``[B, 3, 32, 32]``) for every net of the paper preset; an epoch is 50000
  training images plus 10000 evaluated (forward only), for ``epochs`` epochs and every noise
  level.
* GPU-hours: total FLOPs / ``--tflops`` (sustained, default 15 TFLOP/s: an assumption, not a
  measurement: small CIFAR nets at batch 128 run far below a GPU's peak; a run on the target
  GPU replaces it: time one epoch there and scale by ``epoch_flops``).
* Check: one measured CPU epoch-fraction (``--cpu-steps`` SGD steps of LeNet and VGG11-BN at
  batch 128) gives this machine's sustained FLOP/s, written beside the estimate.

Usage::

    python benchmarks/paper_cost.py      # ~1 min; writes benchmarks/results/paper_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffeosense.experiments.figures.noisy_training import PRESETS
from diffeosense.models import create_model
from diffeosense.provenance import provenance


def train_flops(model: torch.nn.Module, batch: int) -> tuple[float, float]:
    """(forward + backward, forward) FLOPs of one batch ``[batch, 3, 32, 32]``."""
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    total = fc.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as ff:
        model(x)
    return float(total), float(ff.get_total_flops())


def cpu_rate(name: str, steps: int, batch: int = 128) -> float:
    """Measured FLOP/s of SGD steps on this CPU."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    flops, _ = train_flops(model, batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return flops * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflops", type=float, default=15.0)
    ap.add_argument("--cpu-steps", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/paper_cost.json")
    args = ap.parse_args()
    cfg = PRESETS["paper"]
    n_train, n_test, B = 50000, 10000, 2
    rows, total = [], 0.0
    for net in cfg.nets:
        torch.manual_seed(0)
        model = create_model(net.model, in_channels=3, num_classes=10, **net.model_kwargs)
        fb, f = train_flops(model, B)
        epoch = fb / B * n_train + f / B * n_test
        runs = len(cfg.noises) * len(cfg.seeds)
        rows.append({"model": net.model, "train_flops_per_image": fb / B,
                     "epoch_flops": epoch, "runs": runs, "epochs": net.epochs or cfg.epochs})
        total += epoch * (net.epochs or cfg.epochs) * runs
    rates = {m: cpu_rate(m, args.cpu_steps) for m in ("lenet", "vgg11bn")}
    out = {"nets": rows, "total_flops": total, "assumed_gpu_tflops": args.tflops,
           "gpu_hours": total / (args.tflops * 1e12) / 3600,
           "cpu_measured_flops_per_s": rates, "cpu_threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "provenance": provenance()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: out[k] for k in ("total_flops", "gpu_hours", "cpu_measured_flops_per_s")},
                     indent=1))


if __name__ == "__main__":
    main()
