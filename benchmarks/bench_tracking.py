"""What sensitivity tracking costs: one tracked epoch relative to one training epoch.

A tracked epoch is :meth:`diffeosense.tracking.SensitivityTracker.measure`: D, G, R at every
layer on ``n_probes`` fixed probes (three forward passes per probe, no backward). The baseline
is one training epoch of :func:`diffeosense.train.fit` (forward, backward, SGD step on every
training image, then the test evaluation), in the same process, interleaved (train, track,
train, track, ...) after one warm-up each; min and median are reported.

* demo: the demo's model (simplecnn, depth 4, width 32, batch norm) on the embedded MNIST
  (4000 training and 1000 test images, batch 128): a whole epoch is timed, and tracking for
  several probe counts, so the default can be checked against the 20 % goal.
* resnet18: 32 x 32 x 3 inputs, 10 classes. A CIFAR-10 epoch (50000 images) is too long for a
  shared CPU: the training time per image is measured on a few batches and scaled to 50000
  training images plus 10000 test images (evaluated at the measured eval time per image);
  tracking is timed directly.

    .venv/bin/python benchmarks/bench_tracking.py            # both models
    .venv/bin/python benchmarks/bench_tracking.py --quick    # fewer repeats and batches
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from diffeosense._io import write_json
from diffeosense.data import DataConfig, ImageDataset, load_dataset
from diffeosense.provenance import provenance
from diffeosense.tracking import DEFAULT_TRACK_PROBES, SensitivityTracker, TrackConfig
from diffeosense.train import TrainConfig, build_model, evaluate, fit


def _tracker(model, data: ImageDataset, cfg: TrainConfig, n_probes: int) -> SensitivityTracker:
    # Schedule "1" on a 1-epoch run: begin() binds the probes and measures nothing yet.
    tracker = SensitivityTracker(TrackConfig("1", n_probes=n_probes))
    tracker.begin(model, data, cfg, None, [])
    return tracker


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stats(v: list[float]) -> dict:
    return {"min": min(v), "median": statistics.median(v), "all": v}


def bench_demo(repeats: int, probe_counts: list[int]) -> dict:
    cfg = TrainConfig(model="simplecnn", model_kwargs={"depth": 4, "width": 32,
                                                       "batch_norm": True},
                      data=DataConfig("mnist-embedded"), epochs=1, batch_size=128)
    data = load_dataset(cfg.data)
    init, _ = build_model(cfg, data)
    train_t: list[float] = []
    track_t: dict[int, list[float]] = {n: [] for n in probe_counts}
    for r in range(repeats + 1):  # r = 0 is the warm-up
        model = copy.deepcopy(init)
        dt = _timed(lambda: fit(model, data, None, cfg, progress=False))  # noqa: B023
        trackers = {n: _tracker(model, data, cfg, n) for n in probe_counts}
        times = {n: _timed(lambda: trackers[n].measure(model)) for n in probe_counts}  # noqa: B023
        if r > 0:
            train_t.append(dt)
            for n in probe_counts:
                track_t[n].append(times[n])
    med = statistics.median(train_t)
    return {
        "model": "simplecnn", "model_kwargs": cfg.model_kwargs, "data": "mnist-embedded",
        "train_images": len(data.x_train), "test_images": len(data.x_test),
        "batch_size": cfg.batch_size, "repeats": repeats, "epoch_timed": "whole epoch (fit)",
        "train_epoch_s": _stats(train_t),
        "track_s": {str(n): _stats(v) for n, v in track_t.items()},
        "overhead_median": {str(n): statistics.median(v) / med for n, v in track_t.items()},
        "default_probes": DEFAULT_TRACK_PROBES,
    }  # fmt: skip


def bench_resnet18(repeats: int, n_batches: int, n_probes: int) -> dict:
    g = torch.Generator().manual_seed(0)
    n = n_batches * 128
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    xt = torch.randn(256, 3, 32, 32, generator=g)
    yt = torch.randint(0, 10, (256,), generator=g)
    data = ImageDataset.from_tensors(x, y, xt, yt, name="synthetic-32px")
    cfg = TrainConfig(model="resnet18", epochs=1, batch_size=128, eval_batch_size=128)
    init, _ = build_model(cfg, data)
    train_t, eval_t, track_t = [], [], []
    for r in range(repeats + 1):
        model = copy.deepcopy(init)
        dt = _timed(lambda: fit(model, (x, y), None, cfg, progress=False))  # noqa: B023
        et = _timed(lambda: evaluate(model, data, "test", batch_size=128))  # noqa: B023
        tracker = _tracker(model, data, cfg, n_probes)
        tt = _timed(lambda: tracker.measure(model))  # noqa: B023
        if r > 0:
            train_t.append(dt / n)
            eval_t.append(et / len(xt))
            track_t.append(tt)
    epoch = statistics.median(train_t) * 50000 + statistics.median(eval_t) * 10000
    return {
        "model": "resnet18", "image_size": 32, "batch_size": 128, "repeats": repeats,
        "timed_batches": n_batches,
        "epoch_timed": "scaled: 50000 train + 10000 test images (CIFAR-10) at the measured "
                       "time per image",
        "train_s_per_image": _stats(train_t), "eval_s_per_image": _stats(eval_t),
        "train_epoch_s_estimate": epoch,
        "track_s": {str(n_probes): _stats(track_t)},
        "overhead_median": {str(n_probes): statistics.median(track_t) / epoch},
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and batches")
    p.add_argument("--note", default="", help="a note stored in the JSON (e.g. machine load)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                        "bench_tracking.json"))
    args = p.parse_args(argv)
    reps = 2 if args.quick else 3
    counts = sorted({50, DEFAULT_TRACK_PROBES, 200, 500})
    results = []
    demo = bench_demo(reps, counts)
    results.append(demo)
    print(f"demo (simplecnn): training epoch {demo['train_epoch_s']['median']:.2f} s; tracked "
          "epoch / training epoch: " + ", ".join(
              f"{n} probes {v:.1%}" for n, v in demo["overhead_median"].items()), flush=True)
    out = {"benchmark": "tracking", "note": args.note, "threads": torch.get_num_threads(),
           "results": results, "provenance": provenance()}
    write_json(args.out, out)  # after every case: an interrupted run keeps what it measured
    r18 = bench_resnet18(reps, 1 if args.quick else 2, DEFAULT_TRACK_PROBES)
    results.append(r18)
    print(f"resnet18: training epoch (CIFAR-10 size, scaled) {r18['train_epoch_s_estimate']:.0f} "
          f"s; tracked epoch ({DEFAULT_TRACK_PROBES} probes) "
          f"{r18['track_s'][str(DEFAULT_TRACK_PROBES)]['median']:.2f} s = "
          f"{r18['overhead_median'][str(DEFAULT_TRACK_PROBES)]:.2%}", flush=True)
    write_json(args.out, out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
