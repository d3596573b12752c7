"""Training curves on mnist-embedded to choose the quick hyperparameters (no sensitivity)."""
import json
import sys
import time

from diffeosense.data import DataConfig
from diffeosense.train import TrainConfig, train

model, lr, epochs, noise = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
kw = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
cfg = TrainConfig(model=model, model_kwargs=kw, data=DataConfig(name="mnist-embedded", noise=noise),
                  epochs=epochs, lr=lr, batch_size=128, seed=0, keep_every=0)
t = time.time()
res = train(cfg, progress=False)
dt = time.time() - t
hist = [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in res.history]
print(json.dumps({"model": model, "kw": kw, "lr": lr, "noise": noise, "s_per_epoch": round(dt / epochs, 1),
                  "test_error": [h.get("test_error") for h in hist],
                  "train_loss": [h.get("train_loss") for h in hist], "keys": list(hist[0])}))
