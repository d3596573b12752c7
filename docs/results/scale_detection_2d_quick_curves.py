"""Training curves behind the 2D scale-detection ``quick`` preset: writes
``docs/results/scale_detection_2d_quick_curves.csv`` (one row per net, setting and epoch).

The quick preset's P, epochs, test size and learning rates were chosen from these curves alone,
before any sensitivity was measured (the issue's rule). Each setting trains one net with
``diffeosense.train.train`` on the task's dataset exactly as the experiment does
(``preset("quick", ...).train_config(model, seed=0)``: hinge loss, SGD, momentum 0.9, weight
decay 5e-4, cosine), varying P, epochs, lr and batch size; nothing is measured but the errors.

Run from the repository root, one thread per process (about 40 minutes on one core; finished
settings found in RUNS_DIR are read back, not retrained)::

    OMP_NUM_THREADS=1 python docs/results/scale_detection_2d_quick_curves.py [RUNS_DIR]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from diffeosense import _io
from diffeosense.experiments import scale_detection_2d as sd2
from diffeosense.provenance import provenance
from diffeosense.train import train

OUT = Path(__file__).resolve().parent / "scale_detection_2d_quick_curves.csv"
# (model, P, epochs, lr, batch size); test split 1024 throughout.
GRID = [
    ("lenet", 512, 30, 0.05, 128), ("lenet", 512, 30, 0.05, 32), ("lenet", 512, 30, 0.01, 32),
    ("lenet", 1024, 30, 0.05, 128), ("lenet", 1024, 30, 0.05, 32),
    ("lenet", 1024, 30, 0.01, 32),
    ("vgg11", 1024, 30, 0.05, 128), ("vgg11", 1024, 20, 0.01, 128),
    ("vgg11bn", 1024, 30, 0.05, 128),
    ("resnet18", 1024, 20, 0.05, 128),
]


def main(runs: str = "runs/sd2d-curves") -> None:
    torch.set_num_threads(1)
    rows = []
    for model, P, epochs, lr, batch in GRID:
        cfg = sd2.preset("quick", train_size=P, test_size=1024, epochs=epochs, lr=lr,
                         lr_by_model={}, batch_size=batch)
        tcfg = replace(cfg.train_config(model, 0), keep_every=0)
        name = f"{model}_P{P}_E{epochs}_lr{lr}_T1024_cosine_bs{batch}"
        res = train(tcfg, Path(runs) / name, resume=True, progress=False)
        rows += [{"model": model, "P": P, "epochs": epochs, "lr": lr, "batch_size": batch,
                  "epoch": m["epoch"], "test_error": m["test_error"],
                  "train_error": m["train_error"], "test_loss": m["test_loss"],
                  "time_s": m["time"]} for m in res.history]
        best = min(res.history, key=lambda m: m["test_error"])
        print(f"{name}: best test error {best['test_error']:.4f} at epoch {best['epoch']}")
    _io.write_table(OUT, pd.DataFrame(rows), {
        "what": "training curves of the 2D scale-detection nets (quick preset search)",
        "command": "OMP_NUM_THREADS=1 python docs/results/scale_detection_2d_quick_curves.py",
        "seed": 0, "test_size": 1024, "provenance": provenance()})
    print(f"table: {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:])
