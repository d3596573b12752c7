"""What each net of the medium reproduction cost: from the run log of ``reproduce`` (its
``run HASH: done (N s)`` lines) and each run's config.

    python docs/results/reproduce_medium/costs.py OUT LOG > docs/results/reproduce_medium/costs.md

OUT: the ``--out`` folder; LOG: the command's output.
"""
import json
import re
import sys
from pathlib import Path

import pandas as pd

from diffeosense.models.names import display_name

out, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
rows = []
for h, sec in re.findall(r"run ([0-9a-f]{12}): done \(([0-9.]+) s\)", log):
    rc = json.loads((out / "runs" / h / "run_config.json").read_text())["config"]
    t = rc["train"]
    rows.append({"net": display_name(t["model"], t["model_kwargs"]), "noise": t["data"]["noise"],
                 "seed": t["seed"], "epochs": t["epochs"], "seconds": float(sec),
                 "tracked": rc.get("track") is not None})
df = pd.DataFrame(rows)
per = df.groupby("net", sort=False).agg(runs=("seconds", "size"), epochs=("epochs", "first"),
                                         tracked=("tracked", "sum"),
                                         mean_run_s=("seconds", "mean"),
                                         total_s=("seconds", "sum"))
per["s_per_epoch"] = per["mean_run_s"] / per["epochs"]
per["share"] = per["total_s"] / per["total_s"].sum()
print("| net | runs | epochs | tracked runs | mean run (s) | s / epoch | total (min) | share |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for net, r in per.iterrows():
    print(f"| {net} | {r.runs:.0f} | {r.epochs:.0f} | {r.tracked:.0f} | {r.mean_run_s:.0f} | "
          f"{r.s_per_epoch:.1f} | {r.total_s / 60:.1f} | {r.share:.0%} |")
print(f"\nAll {len(df)} runs: {df['seconds'].sum() / 60:.1f} worker-minutes (training, the "
      f"evaluation of the 10000 test images every epoch, the output measurement, tracking).")
