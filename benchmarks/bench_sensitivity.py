"""Benchmark: the streaming sensitivity engine vs the bare forward passes and the published approach.

Legs, in one run (interleaved repeats, min and median reported):

* ``bare``: what any measurement must do: per batch, sample diffeos (batched), deform, draw the
  matched noise, and run the model once on ``[x; tau x; x + eta]`` (3 forward passes' worth),
  keeping nothing.
* ``ours``: ``measure(model, x, layers="all")``: every layer, D, G, R, standard errors.
* ``published``: the authors' approach: keep every layer of every probe (clean, deformed, noisy)
  in memory, then numerators and a ``cdist`` denominator per layer. It needs O(N * sum_k d_k)
  memory, so it runs on fewer probes (``--n-published``); ``ours`` is timed on the same probes
  for the like-for-like ratio.
* ``memory``: peak resident memory (``ru_maxrss`` of a fresh subprocess) of ``ours`` at
  ``--n-probes`` and ``--n-large`` probes: bounded by one batch, not by N.
* ``profile``: where the time of ``ours`` goes, from the ``record_function`` labels that
  ``measure`` sets (``torch.profiler``, one extra run): setup (tracing), perturbations
  (per-probe sampling, the deformation, the matched noise), the forward pass through the
  layer taps, the reductions inside it (numerators, moments), the finite check and the
  summaries (tables, error bars); beside them the same batches' plain forward passes
  (``net(x)``) and the forward through the taps with a sink that does nothing, so that the
  taps' own cost (``tap_overhead``) shows.

CPU timings depend on glibc's allocator: every tensor above its mmap threshold (at most
32 MB by default) is fresh pages, page-faulted at each allocation; with
``MALLOC_MMAP_THRESHOLD_`` set high such tensors are reused from the heap instead. The
JSON records the ``MALLOC_*`` variables the run had, so both settings can be compared.

Inputs are random CIFAR-shaped images ``[N, 3, 32, 32]`` (timing does not depend on content).
Writes ``benchmarks/results/bench_sensitivity.json``.

    python benchmarks/bench_sensitivity.py               # ResNet-18 and VGG-11, 512 probes
    python benchmarks/bench_sensitivity.py --quick       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffeosense import _io
from diffeosense.models import create_model
from diffeosense.noise import matched_noise, sample_noise
from diffeosense.perturbations import MaxEntDiffeo
from diffeosense.provenance import provenance
from diffeosense.sensitivity import measure

HERE = Path(__file__).resolve().parent


def data(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def model(name: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, in_channels=3, num_classes=10)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bare(net, x, batch_size, device):
    """Diffeo + noise sampling and one forward pass of [x; tau x; x + eta] per batch."""
    net = net.to(device).eval()
    pert = MaxEntDiffeo()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size].to(device)
            x_tau = pert.apply(xb, pert.sample(xb, g))
            eta = matched_noise(xb, x_tau, xi=sample_noise(xb, g))
            net(torch.cat([xb, x_tau, xb + eta]))
    sync(device)


def ours(net, x, batch_size, device):
    res = measure(net, x, layers="all", n_probes=x.shape[0], batch_size=batch_size, seed=0,
                  device=device)
    sync(device)
    return res


def published(net, x, batch_size, device):
    """Store all layers of all probes, then numerators and cdist denominators (float32, as the
    authors' code)."""
    from diffeosense.layers import LayerTap

    net = net.to(device).eval()
    pert = MaxEntDiffeo()
    g = torch.Generator().manual_seed(0)
    store: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        tap = LayerTap(net, x[:2].to(device))
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size].to(device)
            x_tau = pert.apply(xb, pert.sample(xb, g))
            eta = matched_noise(xb, x_tau, xi=sample_noise(xb, g))
            tap(torch.cat([xb, x_tau, xb + eta]),
                lambda n, t, B=xb.shape[0]: store.setdefault(n, []).append(
                    t.reshape(3, B, -1).clone()))
        out = {}
        for name, parts in store.items():
            f = torch.cat(parts, dim=1)  # [3, N, d]
            f0, fd, fn = f
            den = torch.cdist(f0, f0).pow(2).mean()
            out[name] = ((fd - f0).pow(2).sum(1).mean() / den,
                         (fn - f0).pow(2).sum(1).mean() / den)
    sync(device)
    return out


LABELS = ("setup", "perturb", "forward", "reduce", "check", "summaries")


def profile(net, x, batch_size, device) -> dict:
    """Seconds per ``measure`` phase (its ``record_function`` labels), beside plain and tapped
    forward passes of the same batches (3 streams each)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from diffeosense.layers import LayerTap

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                     if torch.device(device).type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        t = timed(ours, net, x, batch_size, device)
    phases = {e.key.rsplit(".", 1)[-1]: e.cpu_time_total / 1e6 for e in prof.key_averages()
              if e.key.startswith("diffeosense.measure.")}
    net = net.to(device).eval()
    batches = [torch.cat([x[s:s + batch_size]] * 3).to(device)
               for s in range(0, x.shape[0], batch_size)]
    with torch.no_grad():
        tap = LayerTap(net, batches[0][:2])
        names = tap.names

        def plain():
            for b in batches:
                net(b)
            sync(device)

        def tapped():
            for b in batches:
                tap(b, lambda name, t: None, names)
            sync(device)

        plain_s, tapped_s = timed(plain), timed(tapped)
    out = {k: phases.get(k, 0.0) for k in LABELS}
    out["forward_without_reduce"] = out["forward"] - out["reduce"]
    return {"measure_s_profiled": t, "phases_s": out, "plain_forward_s": plain_s,
            "tapped_forward_noop_s": tapped_s, "tap_overhead": tapped_s / plain_s,
            "note": "phases from torch.profiler (its own overhead included); the plain and "
                    "tapped forwards are timed without the profiler, right after"}


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def summary(ts):
    return {"min_s": min(ts), "median_s": statistics.median(ts), "all_s": ts}


def memory_child(args) -> int:
    """Run one `ours` measurement and print the peak RSS (in a fresh process)."""
    net = model(args.model)
    x = data(args.n)
    t = timed(ours, net, x, args.batch_size, args.device)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print(json.dumps({"n_probes": args.n, "seconds": t, "peak_rss_mb": peak_kb / 1024,
                      "input_mb": x.numel() * 4 / 2**20,
                      "cuda_peak_allocated_mb": cuda_peak / 2**20 if cuda_peak else None}))
    return 0


def memory_leg(name, n, batch_size, device, fixed_mmap_threshold: bool):
    """Peak RSS of a fresh process. glibc raises its mmap threshold dynamically, so freed
    activation buffers get recycled through a fragmenting heap and the peak RSS creeps up with
    the number of batches even though nothing is retained; with a fixed threshold
    (``MALLOC_MMAP_THRESHOLD_``) large buffers go back to the OS and the peak shows what the
    algorithm holds."""
    import os

    env = dict(os.environ)
    if fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, __file__, "--child", "--model", name, "--n", str(n),
           "--batch-size", str(batch_size), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return {**json.loads(out.stdout.strip().splitlines()[-1]),
            "malloc_mmap_threshold_fixed": fixed_mmap_threshold}


def run_memory(args) -> dict:
    mem = [memory_leg(args.memory_model, n, args.batch_size, args.device, fixed)
           for fixed in (True, False) for n in (args.n_probes, args.n_large)]
    print("memory", json.dumps(mem), flush=True)
    return {"model": args.memory_model, "runs": mem,
            "method": "ru_maxrss of a fresh subprocess running one measure()"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet18", "vgg11"])
    p.add_argument("--n-probes", type=int, default=512)
    p.add_argument("--n-large", type=int, default=4096)
    p.add_argument("--n-published", type=int, default=32,
                   help="probes for the store-everything leg (memory grows with N)")
    p.add_argument("--memory-model", default="vgg11")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    p.add_argument("--out", default=str(HERE / "results" / "bench_sensitivity.json"))
    p.add_argument("--no-memory", action="store_true", help="skip the memory leg")
    p.add_argument("--memory-only", action="store_true",
                   help="rerun only the memory leg, updating the JSON at --out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return memory_child(args)
    if args.quick:
        args.n_probes, args.n_large, args.n_published, args.repeats = 64, 256, 16, 1
    if args.memory_only:
        report = json.loads(Path(args.out).read_text())
        report["memory"] = run_memory(args)
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
        return 0
    import os

    report = {"benchmark": "bench_sensitivity", "device": args.device,
              "goal": "ours <= 1.25x bare (ratio_ours_over_bare_min) on ResNet-18 and VGG-11, "
                      "32 px, 512 probes, 2 threads",
              "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
              "load_average_before": os.getloadavg(),
              "threads": torch.get_num_threads(), "batch_size": args.batch_size,
              "n_probes": args.n_probes, "provenance": provenance(), "models": {}}
    x = data(args.n_probes)
    xp = x[:args.n_published]
    for name in args.models:
        net = model(name)
        # Warm-up (allocator, fx tracing caches, oneDNN kernels) before anything is timed.
        bare(net, x[:args.batch_size], args.batch_size, args.device)
        ours(net, x[:args.batch_size], args.batch_size, args.device)
        t = {"bare": [], "ours": [], "published_small": [], "ours_small": []}
        for _ in range(args.repeats):  # interleaved
            t["bare"].append(timed(bare, net, x, args.batch_size, args.device))
            t["ours"].append(timed(ours, net, x, args.batch_size, args.device))
            t["ours_small"].append(timed(ours, net, xp, args.batch_size, args.device))
            t["published_small"].append(timed(published, net, xp, args.batch_size,
                                              args.device))
        res = ours(net, xp, args.batch_size, args.device)
        pub = published(net, xp, args.batch_size, args.device)
        full = res.to_frame("full").set_index("layer")
        # Same probes, same diffeos? No: `published` draws batched diffeos; compare values only
        # loosely (same distributions), and the denominators' convention (cdist incl. diag).
        n_layers = len(full)
        entry = {name: summary(v) for name, v in t.items()}
        entry["profile"] = profile(net, x, args.batch_size, args.device)
        entry["n_layers"] = n_layers
        entry["ratio_ours_over_bare_min"] = min(t["ours"]) / min(t["bare"])
        entry["ratio_ours_over_bare_median"] = (statistics.median(t["ours"])
                                                / statistics.median(t["bare"]))
        entry["ratio_published_over_ours_small_min"] = (min(t["published_small"])
                                                        / min(t["ours_small"]))
        entry["output_D_ours_vs_published_small"] = [float(full.loc["output", "D"]),
                                                     float(pub["output"][0])]
        report["models"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if "ratio" in k or k ==
                                "n_layers"}), json.dumps(entry["profile"]), flush=True)
    if not args.no_memory:
        report["memory"] = run_memory(args)
    report["load_average_after"] = os.getloadavg()
    _io.write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
