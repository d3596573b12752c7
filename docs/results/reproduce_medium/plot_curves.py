"""Draw training_curves.jsonl (one line per run of training_curves.py): training loss and
test error against the epoch, one panel pair per net, one line per learning rate.

    python plot_curves.py training_curves.jsonl training_curves.png
"""
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure

from diffeosense.models.names import display_name

runs = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line]
nets = list(dict.fromkeys(display_name(r["model"], r["kw"]) for r in runs))
fig = Figure(figsize=(2.6 * len(nets), 4.6), layout="constrained")
axes = fig.subplots(2, len(nets), squeeze=False)
for c, net in enumerate(nets):
    for r in (r for r in runs if display_name(r["model"], r["kw"]) == net):
        lr = "Adam 1e-3" if r["lr"] <= 0 else f"lr {r['lr']:g}"
        ep = range(1, len(r["train_loss"]) + 1)
        axes[0][c].plot(ep, r["train_loss"], "o-", ms=2.5, label=f"{lr}, s={r['noise']:g}")
        axes[1][c].plot(ep, r["test_error"], "o-", ms=2.5)
    axes[0][c].set_title(net, fontsize=9)
    axes[0][c].set_yscale("log")
    axes[0][c].legend(fontsize=7, frameon=False)
    axes[1][c].set_xlabel("epoch")
    axes[1][c].set_ylim(0, 1)
    for ax in axes[:, c]:
        ax.grid(alpha=0.3)
axes[0][0].set_ylabel("training loss")
axes[1][0].set_ylabel("test error (10000 images)")
fig.suptitle("Fashion-MNIST, P = 10000, cosine schedule over the run's epochs")
fig.savefig(sys.argv[2], dpi=110)
