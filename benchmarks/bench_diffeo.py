"""Throughput of per-sample random diffeomorphisms: ours against a per-sample loop, kornia,
torchvision and the ``grid_sample`` floor, all measured in one run, interleaved.

Methods (images/s on ``[B, 3, n, n]``, float32, one independent deformation per image):

* ``ours``: ``apply(x, sample_fields(B, n, T, cut=3, generator=g))``, sampling included.
* ``loop``: the published reference algorithm (Petrini et al. 2021), written fresh: per image,
  ``u = einsum(C, S, S)`` for each component with fresh Gaussian coefficients, then a bilinear
  remap with floor/ceil indexing and clamping. The sine bases are built once per batch, not per
  image (the authors rebuild them per call): a slightly stronger baseline than the original.
* ``kornia`` (``RandomElasticTransform``, per-sample noise fields) and ``torchvision``
  (``v2.ElasticTransform``, which draws one field per call, hence called per image): Gaussian-
  smoothed white-noise deformations, a different law; a speed reference only. Both draw from the
  global RNG internally (they take no generator); nothing here seeds it.
* ``floor``: one ``F.grid_sample`` with a precomputed identity grid, same mode/padding/align_corners
  as ours: what any grid-based warp must pay.
* Breakdown of ours (same fields, so where the time goes): ``ours: sample_fields``,
  ``ours: grid`` (the sampling-grid construction), ``ours: grid_sample`` (on our precomputed grid).

Timing: every round calls each method once, in a rotated order (the slow loop, kornia and
torchvision only in the first ``--slow-rounds`` rounds); after a warm-up we keep min and median
over rounds. On a shared machine the min is the better estimate; the load average is recorded. The temperature is the paper's default, a typical displacement of ``--delta``
px at cut 3 (``temperature_for_displacement``): larger displacements make ``grid_sample`` itself
slower (less local memory access), for the floor-with-our-grid as for any warp.

Usage::

    python benchmarks/bench_diffeo.py            # ~1-2 min on 2 cores
    python benchmarks/bench_diffeo.py --quick    # fewer rounds
    python benchmarks/bench_diffeo.py --device cuda
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from diffeosense._io import write_json
from diffeosense.diffeo import (
    _grid_2d,
    _identity_grid,
    _sample,
    apply,
    sample_fields,
    temperature_for_displacement,
)
from diffeosense.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results" / "bench_diffeo.json"
SHAPES = ((1024, 32), (64, 224))  # [B, 3, n, n]


# ------------------------------------------------------------------ reference: per-sample loop
def _sine_modes(n: int, cut: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' ``scalar_field_modes``: mode weights 1/r on the disc r < cut + 1/2, sines."""
    x = torch.linspace(0, 1, n, dtype=dtype, device=device)
    k = torch.arange(1, cut + 1, dtype=dtype, device=device)
    i, j = torch.meshgrid(k, k, indexing="ij")
    r = (i**2 + j**2).sqrt()
    e = (r < cut + 0.5) / r
    s = torch.sin(math.pi * x[:, None] * k[None, :])
    return e, s


def reference_loop(
    x: torch.Tensor, T: float, cut: int, g: torch.Generator, coeffs: torch.Tensor | None = None
) -> torch.Tensor:
    """One field per image, built and applied image by image with index arithmetic.

    ``coeffs [B, 2, cut, cut]`` (already scaled, as ``DiffeoFields.coeffs``) replaces the random
    draw: the benchmark first checks that this loop and ours give the same images.
    """
    B, _, n, m = x.shape
    e, s = _sine_modes(n, cut, x.dtype, x.device)
    y, xx = torch.meshgrid(
        torch.arange(n, dtype=x.dtype, device=x.device),
        torch.arange(m, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    out = torch.empty_like(x)
    for b in range(B):
        if coeffs is None:
            c = T**0.5 * e * torch.randn(2, cut, cut, generator=g, dtype=x.dtype, device=x.device)
        else:
            c = coeffs[b]
        u = torch.einsum("ij,xi,yj->yx", c[0], s, s)  # unit-square field, x component
        v = torch.einsum("ij,xi,yj->yx", c[1], s, s)
        dx, dy = u * m, v * n  # pixels
        xn = (xx - dx).clamp(0, m - 1)
        yn = (y - dy).clamp(0, n - 1)
        xf, yf = xn.floor().long(), yn.floor().long()
        xc, yc = xn.ceil().long(), yn.ceil().long()
        xv, yv = xn - xf, yn - yf
        a = x[b]
        out[b] = (
            (1 - yv) * (1 - xv) * a[:, yf, xf]
            + (1 - yv) * xv * a[:, yf, xc]
            + yv * (1 - xv) * a[:, yc, xf]
            + yv * xv * a[:, yc, xc]
        )
    return out


# ------------------------------------------------------------------ third-party references
def kornia_method(n: int) -> tuple[Callable | None, str]:
    try:
        from kornia.augmentation import RandomElasticTransform
    except ImportError:
        return None, "kornia not installed"
    # kornia's defaults (kernel 63, sigma 32) are for ~224 px images; smaller images get a kernel
    # of about half their side (odd), same sigma/kernel ratio.
    k = 63 if n >= 64 else (n // 2) | 1
    aug = RandomElasticTransform(kernel_size=(k, k), sigma=(k / 2, k / 2), alpha=(1.0, 1.0), p=1.0)
    return aug, f"kornia.augmentation.RandomElasticTransform(kernel_size=({k},{k}), sigma={k / 2}, p=1)"


def torchvision_method() -> tuple[Callable | None, str]:
    try:
        from torchvision.transforms import v2
    except ImportError:
        return None, "torchvision not installed"
    t = v2.ElasticTransform(alpha=50.0, sigma=5.0)

    def per_sample(x: torch.Tensor) -> torch.Tensor:
        # v2 draws ONE displacement per call and shares it across a batch: loop for per-sample.
        return torch.stack([t(img) for img in x])

    return per_sample, "torchvision.transforms.v2.ElasticTransform(alpha=50, sigma=5), per image"


# ------------------------------------------------------------------ timing
def cpu_model() -> str | None:
    """The CPU's model name (Linux), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    methods: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device,
    slow: frozenset[str] = frozenset(), slow_rounds: int | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each method; each round runs every method once, order rotated.

    Methods in ``slow`` take part only in the first ``slow_rounds`` rounds (still interleaved with
    the others): they are 10-300x slower and their min settles quickly.
    """
    names = list(methods)
    slow_rounds = rounds if slow_rounds is None else min(slow_rounds, rounds)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if name in slow and r >= slow_rounds:
                continue
            _sync(device)
            t0 = time.perf_counter()
            methods[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def bench_shape(B: int, n: int, args, device: torch.device) -> dict:
    cut = 3
    T = temperature_for_displacement(args.delta, cut, n)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.rand(B, 3, n, n, generator=g, device=device)
    identity = _identity_grid(n, n, x.dtype, device).view(1, n, n, 2).expand(B, -1, -1, -1)
    identity = identity.contiguous()  # a real [B, H, W, 2] grid, as ours builds
    fields = sample_fields(B, n, T, cut, generator=g, device=device)
    grid = _grid_2d(fields.coeffs, n, n)
    # Same fields, same images: the loop is the algorithm ours computes, not a strawman.
    check = slice(0, 8)
    err = (reference_loop(x[check], T, cut, g, fields.coeffs[check]) - apply(x, fields)[check])
    max_err = err.abs().max().item()
    if max_err > 1e-4:
        raise AssertionError(f"reference loop and ours disagree by {max_err:.2e}")

    methods: dict[str, Callable[[], object]] = {
        "ours": lambda: apply(x, sample_fields(B, n, T, cut, generator=g, device=device)),
        "floor": lambda: F.grid_sample(
            x, identity, mode="bilinear", padding_mode="border", align_corners=True
        ),
        "ours: sample_fields": lambda: sample_fields(B, n, T, cut, generator=g, device=device),
        "ours: grid": lambda: _grid_2d(fields.coeffs, n, n),
        "ours: grid_sample": lambda: _sample(x, grid, "bilinear"),
    }
    notes = {}
    images = dict.fromkeys(methods, B)  # images per call, for images/s
    if not args.no_loop:
        images["loop"] = B
        methods["loop"] = lambda: reference_loop(x, T, cut, g)
    if not args.no_third_party:
        aug, notes["kornia"] = kornia_method(n)
        if aug is not None:
            methods["kornia"] = lambda: aug(x)
            images["kornia"] = B
        tv, notes["torchvision"] = torchvision_method()
        if tv is not None:
            # Image by image it is ~100x slower than the rest: time it on a slice of the batch.
            x_tv = x[: args.tv_images]
            methods["torchvision"] = lambda: tv(x_tv)
            images["torchvision"] = x_tv.shape[0]

    with torch.inference_mode():
        slow = frozenset({"loop", "kornia", "torchvision"})
        times = time_interleaved(methods, args.rounds, args.warmup, device, slow, args.slow_rounds)
    rows = {}
    for name, ts in times.items():
        k = images[name]
        rows[name] = {
            "images_per_call": k,
            "seconds": ts,
            "min_s": min(ts),
            "median_s": statistics.median(ts),
            "images_per_s_best": k / min(ts),
            "images_per_s_median": k / statistics.median(ts),
        }
    floor, ours = rows["floor"], rows["ours"]
    summary = {
        "ours_over_floor_min": ours["min_s"] / floor["min_s"],
        "ours_over_floor_median": ours["median_s"] / floor["median_s"],
    }
    for other in ("loop", "kornia", "torchvision"):
        if other in rows:
            for stat in ("best", "median"):
                key = f"images_per_s_{stat}"
                summary[f"speedup_vs_{other}_{stat}"] = ours[key] / rows[other][key]
    return {
        "batch": B, "size": n, "channels": 3, "dtype": str(x.dtype), "cut": cut, "T": T,
        "delta_px": args.delta, "loop_vs_ours_max_abs_diff": max_err, "methods": rows, "summary": summary, "notes": notes,
    }


def print_table(result: dict) -> None:
    B, n = result["batch"], result["size"]
    floor = result["methods"]["floor"]["images_per_s_best"]
    print(f"\n[{B}, 3, {n}, {n}] float32, cut 3, T = {result['T']:.3e} ({result['delta_px']} px)")
    print(f"{'method':<22}{'min ms':>10}{'median ms':>11}{'img/s (best)':>14}{'img/s (med)':>13}"
          f"{'x floor':>9}")
    for name, r in result["methods"].items():
        print(f"{name:<22}{r['min_s'] * 1e3:>10.2f}{r['median_s'] * 1e3:>11.2f}"
              f"{r['images_per_s_best']:>14.0f}{r['images_per_s_median']:>13.0f}"
              f"{floor / r['images_per_s_best']:>9.2f}")
    s = result["summary"]
    line = f"ours / floor: {s['ours_over_floor_min']:.2f} (min), {s['ours_over_floor_median']:.2f} (median)"
    if "speedup_vs_loop_best" in s:
        line += (f"; ours vs loop: {s['speedup_vs_loop_best']:.1f}x (min), "
                 f"{s['speedup_vs_loop_median']:.1f}x (median)")
    print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--threads", default=str(len(os.sched_getaffinity(0))),
                   help="torch intra-op threads, set explicitly and recorded; a comma list runs "
                   "the whole benchmark once per value (default: all cores, here "
                   f"{len(os.sched_getaffinity(0))})")
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--slow-rounds", type=int, default=7,
                   help="rounds that also time the slow loop/kornia/torchvision (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--quick", action="store_true", help="10 rounds, 3 slow rounds, 1 warm-up")
    p.add_argument("--delta", type=float, default=1.0,
                   help="typical displacement in px at cut 3 that sets T (default 1, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--tv-images", type=int, default=16,
                   help="images per torchvision call (it runs image by image; default 16)")
    p.add_argument("--no-loop", action="store_true", help="skip the slow per-sample loop")
    p.add_argument("--no-third-party", action="store_true", help="skip kornia and torchvision")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.slow_rounds, args.warmup = 10, 3, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        print(f"error: --threads must be integers like 2 or 1,2; got {args.threads!r}", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    runs = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        results = []
        for B, n in SHAPES:
            print(f"timing [{B}, 3, {n}, {n}] with {threads} thread(s) ...", file=sys.stderr, flush=True)
            results.append(bench_shape(B, n, args, device))
        runs.append({"threads": torch.get_num_threads(), "results": results})
    info = provenance()
    info["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    info["cpu_model"] = cpu_model()
    report = {
        "benchmark": "bench_diffeo",
        "threads": [run["threads"] for run in runs],
        "cores_available": len(os.sched_getaffinity(0)),
        "rounds": args.rounds,
        "slow_rounds": args.slow_rounds,
        "warmup": args.warmup,
        "load_average_before_after": [load_before, os.getloadavg()],
        "goal": "ours <= 1.3x floor at both sizes (CPU), <= 2x on CUDA; the loop ratio as measured",
        "runs": runs,
        "provenance": info,
    }
    for run in runs:
        print(f"\n=== {run['threads']} thread(s) on {info['device']} ===")
        for r in run["results"]:
            print_table(r)
    write_json(args.out, report)
    print(f"\n{info['cpu_model'] or info['machine']}, {report['cores_available']} cores; load "
          f"average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
