"""Every medium run's training history in one table (the training curves of the runs that
were measured): one row per run and epoch, from ``runs/<hash>/train/metrics.jsonl``.

    python docs/results/reproduce_medium/histories.py OUT > docs/results/reproduce_medium/run_histories.csv

OUT: the ``reproduce --scale medium --out`` folder. Also prints to stderr, per net and noise
level, the last epoch's training loss and its relative change over the last 20 % of the
epochs (averaged over seeds): how close to a plateau the run ended.
"""
import json
import sys
from pathlib import Path

import pandas as pd

from diffeosense.models.names import display_name

rows = []
for folder in sorted(Path(sys.argv[1], "runs").iterdir()):
    cfg_file = folder / "run_config.json"
    if not (folder / "done").is_file() or not cfg_file.is_file():
        continue
    t = json.loads(cfg_file.read_text())["config"]["train"]
    net = display_name(t["model"], t["model_kwargs"])
    for line in (folder / "train" / "metrics.jsonl").read_text().splitlines():
        h = json.loads(line)
        rows.append({"model": net, "noise": t["data"]["noise"], "seed": t["seed"],
                     "run": folder.name, **{k: h[k] for k in (
                         "epoch", "lr", "train_loss", "train_error", "test_loss",
                         "test_error", "time")}})
df = pd.DataFrame(rows).sort_values(["model", "noise", "seed", "epoch"], kind="stable")
df.to_csv(sys.stdout, index=False, float_format="%.6g")


def tail_change(g):
    n = int(g["epoch"].max())
    k = max(1, round(0.2 * n))
    last = g.loc[g["epoch"] == n, "train_loss"].item()
    before = g.loc[g["epoch"] == n - k, "train_loss"].item()
    return pd.Series({"epochs": n, "train_loss": last, "tail_change": last / before - 1,
                      "train_error": g.loc[g["epoch"] == n, "train_error"].item(),
                      "best_test_error": g["test_error"].min()})


per_run = df.groupby(["model", "noise", "seed"]).apply(tail_change, include_groups=False)
print(per_run.groupby(["model", "noise"]).mean().round(4).to_string(), file=sys.stderr)
