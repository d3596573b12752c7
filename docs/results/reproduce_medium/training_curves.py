"""Training curves on the full Fashion-MNIST (Debian package or --data-root) to choose the
medium hyperparameters, before any sensitivity is measured. One JSON line per run:

    python training_curves.py MODEL LR EPOCHS NOISE P '{"width": 32}'  >> training_curves.jsonl
"""
import json
import sys
import time

import torch

from diffeosense.data import DataConfig
from diffeosense.train import TrainConfig, train

model, lr, epochs, noise = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
P = None if sys.argv[5] == "all" else int(sys.argv[5])
kw = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
cfg = TrainConfig(model=model, model_kwargs=kw,
                  data=DataConfig(name="fashion-mnist", P=P, noise=noise, download=False),
                  epochs=epochs, lr=lr if lr > 0 else None, batch_size=128, seed=0, keep_every=0)
t = time.time()
res = train(cfg, progress=False)
dt = time.time() - t
hist = [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in res.history]
print(json.dumps({"model": model, "kw": kw, "lr": lr, "noise": noise, "P": P,
                  "threads": torch.get_num_threads(), "s_per_epoch": round(dt / epochs, 1),
                  "test_error": [h.get("test_error") for h in hist],
                  "train_loss": [h.get("train_loss") for h in hist]}), flush=True)
