"""Peak memory and time of ``measure`` at a large input, without and with a memory budget.

ResNet-18 (10 classes) at 224 x 224 x 3, every layer, ``--n-probes`` random probes, one
measurement per fresh child process (so that each peak resident memory is its own): the
baseline is ``max_memory=None`` (no budget: the requested batch of 128 probes), then each
``--budgets`` value. Reported per run: the batch size ``measure`` chose, its estimated peak
(``peak_memory_estimate``), the child's peak resident memory (``ru_maxrss``) and its growth
over the process before measuring (model built, torch loaded), the wall time, and the largest
relative difference of D, G, R from the baseline (the budget must not change the numbers).

    .venv/bin/python benchmarks/bench_memory.py                     # 500 probes, 2 GB budget
    .venv/bin/python benchmarks/bench_memory.py --quick             # 64 probes at 112 px
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
size, n, budget, limit = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
# An address-space limit: a run that needs more fails with an allocation error, reported,
# instead of drawing the kernel's out-of-memory killer onto the machine.
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch
from diffeosense import measure
from diffeosense.models import create_model
torch.manual_seed(0)  # the same initialization in every child: the numbers are compared
net = create_model("resnet18", 3, 10)
x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
r = measure(net, x, n_probes=n, batch_size=128, layers="all", max_memory=budget)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = r.table[r.table.view == "full"]
print(json.dumps({"batch_size": r.config["batch_size"], "seconds": sec,
                  "threads": torch.get_num_threads(),
                  "estimate": r.config.get("peak_memory_estimate"), "peak_rss": peak,
                  "rss_before": base, "growth": peak - base,
                  "D": out.D.tolist(), "G": out.G.tolist(), "R": out.R.tolist()}))
"""


def run_one(size: int, n: int, budget, limit: int) -> dict:
    """One measurement in a fresh process; ``{"error": ...}`` when it ran out of memory."""
    p = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(n), json.dumps(budget),
                        str(limit)], capture_output=True, text=True)
    if p.returncode:
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit code {p.returncode}",
                "returncode": p.returncode}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _total_ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n-probes", type=int, default=500)
    ap.add_argument("--budgets", nargs="+", default=["auto", "2GB"],
                    help="max_memory values after the unbudgeted baseline (default: auto 2GB)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unbudgeted run (at 224 px it alone takes 12+ min on 2 cores)")
    ap.add_argument("--limit-fraction", type=float, default=0.75,
                    help="address-space limit of each child, as a share of the RAM (0.75)")
    ap.add_argument("--quick", action="store_true", help="64 probes at 112 px")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_memory.json"))
    a = ap.parse_args()
    if a.quick:
        a.size, a.n_probes = 112, 64
    from diffeosense._io import write_json
    from diffeosense.provenance import provenance

    limit = int(a.limit_fraction * _total_ram())
    runs, ref = [], None
    if not a.no_baseline:
        base = run_one(a.size, a.n_probes, None, limit)
        runs.append({"max_memory": None, **{k: v for k, v in base.items() if k not in "DGR"}})
        ref = base if "error" not in base else None
    for b in a.budgets:
        r = run_one(a.size, a.n_probes, b, limit)
        row = {"max_memory": b, **{k: v for k, v in r.items() if k not in "DGR"}}
        if "error" not in r:
            if ref is None:
                ref = r  # the numbers are compared with the first run that finished
            else:
                row["max_rel_diff_vs_first_finished"] = max(
                    abs(u - v) / abs(v) for q in "DGR"
                    for u, v in zip(r[q], ref[q], strict=True) if v)
        runs.append(row)
    for r in runs:
        if "error" in r:
            print(f"max_memory {r['max_memory']}: failed: {r['error']}")
            continue
        print(f"max_memory {r['max_memory']}: batch {r['batch_size']}, estimate "
              f"{(r['estimate'] or 0) / 2**30:.2f} GB, peak RSS {r['peak_rss'] / 2**30:.2f} GB "
              f"(+{r['growth'] / 2**30:.2f} GB), {r['seconds']:.1f} s"
              + (f", max rel diff {r['max_rel_diff_vs_first_finished']:.1e}"
                 if "max_rel_diff_vs_first_finished" in r else ""))
    write_json(a.out, {"benchmark": "bench_memory", "model": "resnet18", "size": a.size,
                       "n_probes": a.n_probes, "layers": "all", "batch_size_asked": 128,
                       "child_address_space_limit": limit, "runs": runs,
                       "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                       "provenance": provenance()})


if __name__ == "__main__":
    main()
