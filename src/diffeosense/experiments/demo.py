"""The main job: train a small CNN on embedded data and watch it lose spatial information.

``run(DemoConfig(), out_dir)`` is a pure function of its config. It is one
:class:`~diffeosense.experiments.run.RunConfig` (:func:`run_config`) run into ``out_dir`` by
the engine every sweep uses (:func:`~diffeosense.experiments.run.run_in`), plus two figures and
a summary: it trains the model on the embedded MNIST digits (no download), tracking it while it
trains, then measures D, G and R at every layer at initialization and after training on the
same probes, diffeos and noise, and writes the run's files (``run_config.json``,
``attempts.json``, ``done``; see :mod:`diffeosense.experiments.run`) and

* ``train/``: the training run (checkpoints, ``metrics.jsonl``, ``config.json``),
* ``sensitivity_init.csv``, ``sensitivity_trained.csv`` (+ ``.meta.json``): tidy tables,
* ``sensitivity.png``: D, G, R against depth, init vs trained,
* ``train/track.csv`` (+ ``.meta.json``): D, G, R of every layer at every tracked epoch,
  measured while training (:mod:`diffeosense.tracking`, the same probes, diffeos and noise at
  every epoch), and ``tracking.png``: its heatmaps over (layer, epoch) and the output's curves,
* ``summary.json``: the headline numbers, the config, provenance and the command.

Re-running the same config into the same folder resumes training where it stopped and re-uses
the finished run; a folder holding another config's run is refused. A folder written by the
demo before it was a run (``train/`` and tables, no ``run_config.json``) resumes: its training
is re-used (``train(..., resume=True)``, which refuses another config's checkpoints) and its
tables are measured again (they name no run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import RunConfig

__all__ = ["DemoConfig", "run", "run_config"]


@dataclass
class DemoConfig:
    """What the demo trains and measures (saved in ``summary.json``)."""

    model: str = "simplecnn"
    # Four 3x3 conv layers of width 32, batch norm, max pooling: 1.7 % test error on the 4000
    # embedded digits after 6 epochs (~2 CPU minutes). Without batch norm the same net, at the
    # paper's lr 0.1, was still at 12 % after 6 epochs (measured), too little training to show
    # what training does to the sensitivities.
    model_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"depth": 4, "width": 32, "batch_norm": True}
    )
    data: str = "mnist-embedded"
    epochs: int = 6
    batch_size: int = 128
    n_probes: int = 500  # the paper's number of probe images
    perturbation: str = "diffeo"  # 1 px typical displacement, cut 3 (the paper's default)
    # Tracking during training: every epoch, on the tracker's default probe count (small
    # enough that tracking costs under 20 % of a training epoch; benchmarks/bench_tracking.py).
    track: str = "every:1"
    track_probes: int | None = None  # None: diffeosense.tracking.DEFAULT_TRACK_PROBES
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


def run_config(cfg: DemoConfig) -> RunConfig:
    """The :class:`~diffeosense.experiments.run.RunConfig` the demo runs: ``cfg``'s net trained
    on its data, measured at every layer at init and after training on the first ``n_probes``
    test images, tracked while training on ``track_probes`` of them."""
    from ..data import DataConfig
    from ..tracking import DEFAULT_TRACK_PROBES
    from ..train import TrainConfig
    from .run import RunConfig

    tcfg = TrainConfig(
        model=cfg.model, model_kwargs=dict(cfg.model_kwargs),
        data=DataConfig(name=cfg.data, seed=cfg.seed), epochs=cfg.epochs,
        batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, keep_every=0,
    )
    track = {"schedule": cfg.track, "perturbation": cfg.perturbation, "seed": cfg.seed,
             "n_probes": cfg.track_probes if cfg.track_probes is not None
             else DEFAULT_TRACK_PROBES}
    return RunConfig(train=tcfg, layers="all", stages=["init", "trained"],
                     n_probes=cfg.n_probes, probe_split="test", probe_order="split",
                     perturbation=cfg.perturbation, seed=cfg.seed, track=track)


def run(cfg: DemoConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run :func:`run_config` into ``out_dir`` (:func:`~diffeosense.experiments.run.run_in`:
    train, measure at init and after training, track), plot; returns the summary dict."""
    from .._io import run_lock

    with run_lock(out_dir):  # one process per run folder; a second gets RunFolderBusy
        return _run_locked(cfg, Path(out_dir))


def _run_locked(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    import json

    from .._io import check_run_folder, clean_stale_temporaries, write_json
    from ..plots.sensitivity import plot_sensitivity
    from ..plots.tracking import plot_tracking
    from ..provenance import provenance
    from ..tracking import load_track
    from .run import load_run, run_in

    clean_stale_temporaries(out)  # we own the folder: a .tmp left here is a killed write
    rcfg = run_config(cfg)
    run_in(rcfg, out, progress=cfg.progress)
    finished = load_run(out)
    init, trained = finished["tables"]["init"], finished["tables"]["trained"]
    plot_sensitivity(
        [init, trained], labels=["initialization", f"trained ({cfg.epochs} epochs)"],
        title=f"{cfg.model} on {cfg.data}: sensitivity to diffeos (D), noise (G), R = D/G",
        path=out / "sensitivity.png",
    )

    track, _ = load_track(out / "train" / "track.csv")
    plot_tracking(track, path=out / "tracking.png",
                  title=f"{cfg.model} on {cfg.data}, while training: D, G, R of every layer "
                  f"({rcfg.track['n_probes']} probes, the same diffeos and noise every epoch)")
    done = json.loads((out / "done").read_text())
    summary = {
        "config": asdict(cfg),
        "test_error": done.get("test_error"),
        "layers": _headline(init, trained),
        "tracking": _output_trajectory(track),
        "files": sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
        "provenance": provenance(),
    }
    check_run_folder(out)  # the summary never names files that are gone
    write_json(out / "summary.json", summary)
    return summary


def _headline(init, trained) -> dict[str, Any]:
    """D, G, R at the input, the middle and the output layer, init vs trained."""
    a = init.to_frame(view="full").set_index("layer")
    b = trained.to_frame(view="full").set_index("layer")
    names = list(a.index)
    picks = {"input": names[0], "middle": names[len(names) // 2], "output": names[-1]}
    rows = {}
    for where, name in picks.items():
        rows[where] = {"layer": name} | {
            f"{q}_{tag}": float(df.loc[name, q]) for tag, df in (("init", a), ("trained", b))
            for q in ("D", "G", "R")
        }
    return rows


def _output_trajectory(track) -> list[dict[str, Any]]:
    """The output layer's D, G, R (and SEs) and the test error at every tracked epoch."""
    rows = track[(track.view == "full") & (track.layer == track.layer.iloc[-1])]
    keys = ("D", "G", "R", "D_se", "G_se", "R_se", "test_error")
    return [{"epoch": int(r.epoch)} | {k: float(getattr(r, k)) for k in keys}
            for r in rows.sort_values("epoch").itertuples()]


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"test error after training: {summary['test_error']:.2%}"
             if summary["test_error"] is not None else "test error: n/a",
             f"{'':8s}{'layer':24s}{'D init':>10s}{'D trained':>11s}{'G init':>10s}"
             f"{'G trained':>11s}{'R init':>10s}{'R trained':>11s}"]
    for where, r in summary["layers"].items():
        vals = "".join(
            f"{r[f'{q}_{t}']:>{10 if t == 'init' else 11}.3g}"
            for q in ("D", "G", "R") for t in ("init", "trained")
        )
        lines.append(f"{where:8s}{r['layer'][:23]:24s}{vals}")
    r = summary["layers"]["output"]
    if all(math.isfinite(r[k]) for k in ("R_init", "R_trained")):
        lines.append(f"output R changed x{r['R_trained'] / r['R_init']:.2g} with training")
    traj = summary.get("tracking") or []
    if traj:
        lines.append("while training (tracking.png), output R by epoch: " + ", ".join(
            f"{t['epoch']}: {t['R']:.3g}" for t in traj))
    return "\n".join(lines)
