"""Training throughput: diffeosense's loop (``fit``) vs a bare PyTorch loop.

Same model (same initial weights), same in-memory data, same SGD (lr 0.1, momentum 0.9,
weight decay 5e-4), same batch size; no augmentation, no noise, no files written (the
per-epoch checkpoint cost is reported apart, as it depends on the disk). Repeats are
interleaved (ours, bare, ours, bare, ...) after one warm-up each; we report min and median
images/s and the ratio ours / bare (goal >= 0.95).

    .venv/bin/python benchmarks/bench_train.py            # simplecnn + resnet18, 32 px
    .venv/bin/python benchmarks/bench_train.py --quick    # fewer batches and repeats
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffeosense._io import write_json
from diffeosense.models import create_model
from diffeosense.provenance import provenance
from diffeosense.train import TrainConfig, fit


def bare_loop(model, x, y, batch_size, lr, seed):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        out = model(x[idx])
        loss = F.cross_entropy(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def ours(model, x, y, batch_size, lr, out_dir=None):
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, schedule="constant",
                      optimizer="sgd", weight_decay=5e-4)  # fmt: skip
    fit(model, (x, y), None, cfg, out_dir, progress=False)


def bench(name, kw, n_batches, batch_size, repeats):
    g = torch.Generator().manual_seed(0)
    n = n_batches * batch_size
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init = create_model(name, in_channels=3, num_classes=10, **kw)
    times = {"ours": [], "bare": []}
    for r in range(repeats + 1):  # r = 0 is the warm-up
        for which in ("ours", "bare"):
            model = copy.deepcopy(init)
            t0 = time.perf_counter()
            if which == "ours":
                ours(model, x, y, batch_size, 0.1)
            else:
                bare_loop(model, x, y, batch_size, 0.1, seed=r)
            dt = time.perf_counter() - t0
            if r > 0:
                times[which].append(dt)
    # The checkpoint cost of one epoch (init + epoch + best + last), measured once.
    with tempfile.TemporaryDirectory() as d:
        model = copy.deepcopy(init)
        t0 = time.perf_counter()
        ours(model, x, y, batch_size, 0.1, out_dir=Path(d) / "run")
        with_ckpt = time.perf_counter() - t0
    ips = {k: [n / t for t in v] for k, v in times.items()}
    res = {
        "model": name, "model_kwargs": kw, "image_size": 32, "batch_size": batch_size,
        "n_batches": n_batches, "repeats": repeats,
        "images_per_s": {k: {"min": min(v), "median": statistics.median(v), "all": v}
                         for k, v in ips.items()},
        "ratio_median": statistics.median(ips["ours"]) / statistics.median(ips["bare"]),
        "ratio_best": max(ips["ours"]) / max(ips["bare"]),
        "ours_with_checkpoints_images_per_s": n / with_ckpt,
        "params": sum(p.numel() for p in init.parameters()),
    }  # fmt: skip
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    args = p.parse_args(argv)
    # (model, kwargs, batches per epoch, batch size, repeats): a few minutes on 2 CPU cores.
    cases = [
        ("simplecnn", {}, 3 if args.quick else 6, 128, 2 if args.quick else 3),
        # ResNet-18 needs >= 4 batches x 3 repeats: with 2 x 2 the ratio swung by +-7 % run to run.
        ("resnet18", {}, 1 if args.quick else 4, 128, 2 if args.quick else 3),
    ]
    results = []
    for name, kw, nb, bs, rep in cases:
        r = bench(name, kw, nb, bs, rep)
        results.append(r)
        im = r["images_per_s"]
        print(f"{name:10s} ours {im['ours']['median']:8.1f} img/s (min {im['ours']['min']:.1f})  "
              f"bare {im['bare']['median']:8.1f} img/s (min {im['bare']['min']:.1f})  "
              f"ratio {r['ratio_median']:.3f} (best-vs-best {r['ratio_best']:.3f})  "
              f"with checkpoints {r['ours_with_checkpoints_images_per_s']:.1f} img/s",
              flush=True)  # fmt: skip
        # written after every case, so an interrupted run keeps what it measured
        write_json(args.out, {"benchmark": "train", "results": results,
                              "provenance": provenance()})  # fmt: skip
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
