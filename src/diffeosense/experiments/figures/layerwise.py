"""The paper's Fig. 3: D_k, G_k, R_k of original vs channel-shuffled nets, at initialization
and after training on clean data.

The nets are trained by the sweep engine with the same :class:`~diffeosense.experiments.run.
RunConfig` as the clean (s = 0) runs of :mod:`.noisy_training`, so a ``reproduce all`` trains
each of them once (and :mod:`.filter_spectra` reads the same checkpoints). On the checkpoints
``init.pt`` and ``best.pt`` of each run this module calls the pooling engine only
(:func:`diffeosense.pooling.pooling_report`); it adds the tables and the paper's claims:
``pooling_report(model, clean test probes, n_shuffles=K)`` at init and trained gives D, G, R
of every layer for the net and for K copies whose convolutions have their input channels
permuted (geometric mean over copies), and the share of the stability that shuffling destroys
(``channel_fraction``: channel pooling) or keeps (spatial pooling).

>>> [n.model for n in PRESETS["quick"].training.nets]
['lenet', 'vgg11bn']
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._io import to_jsonable
from ...models.names import long_name
from ..figure import Figure, FigureContext, FigureOutput, register_figure
from ..run import RunConfig, run_dir
from . import noisy_training as nt

__all__ = ["LayerwiseConfig", "PRESETS", "run_configs", "checkpoints", "clean_nets",
           "layerwise_tables", "layerwise_claims", "run"]


@dataclass(frozen=True)
class LayerwiseConfig:
    """Nets trained on clean data (``training``: a noisy-training grid with ``noises=[0.0]``)
    and how their layers are measured.

    Attributes:
        training: the nets and their recipe (the clean runs of the noisy-training preset).
        n_probes: clean test probes for D, G, R at every layer.
        n_shuffles: channel-shuffled copies per net and stage.
        layers: which layers (``"all"``: every node of the graph, as the paper).
        seed: the measurement and shuffling seed.
        init_batchnorm: how BatchNorm normalizes in the untrained nets (``measure``'s
            ``batchnorm``): ``"batch"``, each of x, tau x, x + eta by its own statistics over
            the probes, as the authors measured untrained nets (science.md §1b); trained nets
            are measured as given (running statistics), ``"eval"``.
    """

    training: nt.NoisyTrainingConfig
    n_probes: int = 500
    n_shuffles: int = 3
    layers: Any = "all"
    seed: int = 0
    init_batchnorm: str = "batch"

    def __post_init__(self) -> None:
        if self.training.noises != [0.0]:
            raise ValueError(f"the layer-wise figures are for clean training: noises must be "
                             f"[0.0], got {self.training.noises}")
        if self.init_batchnorm not in ("eval", "batch"):
            raise ValueError(f"init_batchnorm must be 'eval' or 'batch', got "
                             f"{self.init_batchnorm!r}")
        if self.n_shuffles < 1:
            raise ValueError(f"n_shuffles must be >= 1 (the figure compares original and "
                             f"shuffled nets), got {self.n_shuffles}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def clean_nets(preset: nt.NoisyTrainingConfig, models: list[str]) -> nt.NoisyTrainingConfig:
    """The clean (s = 0) runs of ``models`` in a noisy-training preset: the same configs, so
    the same run folders."""
    nets = [n for n in preset.nets if n.model in models]
    return dataclasses.replace(preset, nets=nets, noises=[0.0])


PRESETS: dict[str, LayerwiseConfig] = {
    # Quick: the two CNNs of the quick noisy-training grid that the paper also shows (Fig. 3:
    # VGG11, VGG11bn, AlexNet, LeNet), trained exactly as there (same runs), 300 probes, 2
    # shuffled copies: the layer-wise measurement of VGG11-BN then costs ~a minute per copy.
    "quick": LayerwiseConfig(training=clean_nets(nt.PRESETS["quick"], ["lenet", "vgg11bn"]),
                                  n_probes=300, n_shuffles=2),
    "paper": LayerwiseConfig(
        training=clean_nets(nt.PRESETS["paper"], ["vgg11", "vgg11bn", "alexnet", "lenet"]),
        n_probes=500, n_shuffles=3),
}


def run_configs(cfg: LayerwiseConfig, device: str = "cpu",
                data_root: str | None = None, data: dict[str, Any] | None = None
                ) -> list[RunConfig]:
    """The training runs (identical to the clean noisy-training runs: shared hash folders)."""
    return nt.run_configs(cfg.training, device=device, data_root=data_root, data=data)


def checkpoints(rc: RunConfig, runs: Path) -> dict[str, Path]:
    """``{"init": init.pt, "trained": the measured checkpoint}`` of a clean run (``best.pt``
    for ``stages == ["best"]``, else ``last.pt``)."""
    ck = run_dir(rc, runs) / "train" / "checkpoints"
    stage = "best.pt" if rc.stages == ["best"] else "last.pt"
    return {"init": ck / "init.pt", "trained": ck / stage}


def _probes(rc: RunConfig, n: int):
    from ...data import load_dataset

    data = load_dataset(rc.train.data)
    x = data.x_test if data.x_test is not None else data.x_train
    return x[:n]


def layerwise_tables(cfg: LayerwiseConfig, configs: list[RunConfig], runs: Path,
                     out: Path, device: str = "cpu"):
    """Per net and stage, :func:`~diffeosense.pooling.pooling_report` (saved under
    ``out/<net>/<stage>-<hash>_*.csv``, the hash of the measurement settings: reused when
    present). Returns one long table: ``model, stage, layer, depth, kind, D, D_shuffled, G,
    G_shuffled, R, R_shuffled, channel_fraction``."""
    import pandas as pd

    from ...pooling import PoolingReport, pooling_report
    from ...provenance import config_hash
    from ...train import load_checkpoint

    frames = []
    for rc in configs:
        name = nt.display_name(rc.train)
        # Named by the former long name: pooling reports measured before stay reused.
        folder = out / _slug(long_name(rc.train.model, rc.train.model_kwargs))
        x = None
        for stage, ck in checkpoints(rc, runs).items():
            bn = cfg.init_batchnorm if stage == "init" else "eval"
            settings = {"run": rc.hash(), "stage": stage, "n_probes": cfg.n_probes,
                        "n_shuffles": cfg.n_shuffles, "layers": cfg.layers, "seed": cfg.seed,
                        "batchnorm": bn}
            prefix = f"{stage}-{config_hash(settings, 8)}_"
            if (folder / f"{prefix}pooling.csv").is_file():
                rep = PoolingReport.load(folder, prefix=prefix)
            else:
                if x is None:
                    x = _probes(rc, cfg.n_probes)
                model, _, _ = load_checkpoint(ck, map_location=device)
                rep = pooling_report(model, x, n_shuffles=cfg.n_shuffles, seed=cfg.seed,
                                     layers=cfg.layers, n_probes=cfg.n_probes, device=device,
                                     batchnorm=bn, meta={"model": name, "stage": stage})
                rep.save(folder, prefix=prefix)
            t = rep.to_frame()[["layer", "depth", "kind", "D", "D_shuffled", "G", "G_shuffled",
                                "R", "R_shuffled", "channel_fraction"]]
            t.insert(0, "stage", stage)
            t.insert(0, "model", name)
            frames.append(t)
    return pd.concat(frames, ignore_index=True)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def _ends(table, model: str, stage: str):
    t = table[(table["model"] == model) & (table["stage"] == stage)].sort_values("depth")
    return t.iloc[0], t.iloc[-1]


def layerwise_claims(table) -> list[dict[str, Any]]:
    """The claims of Fig. 3, from the long table of :func:`layerwise_tables` (first row: the
    input, last: the output of each net). Each is judged on the mean over the nets of a
    per-net number (a log10 ratio, or the channel share), with its bootstrap interval over
    the nets (:mod:`~diffeosense.experiments.verdicts`)."""
    from ..verdicts import all_of, judge, mean_over

    models = list(dict.fromkeys(table["model"]))
    out = []

    def claim(text, values, sign, ev, magnitude=None, unit="log10"):
        est = mean_over(values, what="nets")
        out.append({"text": text, "verdict": judge(est, sign, magnitude=magnitude),
                    "estimate": est.text(), "evidence": "; ".join(ev)
                    + f"; mean {unit} over nets {est.text()} ({est.method})"})

    vals, ev = [], []
    for m in models:
        i0, o0 = _ends(table, m, "init")
        i1, o1 = _ends(table, m, "trained")
        r0, r1 = o0.D / i0.D, o1.D / i1.D
        vals.append(math.log10(r1) - math.log10(r0))
        ev.append(f"{m}: D_out/D_in init {r0:.3g}, trained {r1:.3g}")
    claim("Training makes the deep representation stable to diffeomorphisms: D falls from "
          "input to output after training, more than at init.", vals, -1, ev,
          unit="log10 (trained / init) of D_out/D_in")
    vals, ev = [], []
    for m in models:
        _, o0 = _ends(table, m, "init")
        _, o1 = _ends(table, m, "trained")
        vals.append(math.log10(o1.G / o0.G))
        ev.append(f"{m}: G_out init {o0.G:.3g}, trained {o1.G:.3g}")
    claim("Training makes the output more sensitive to white noise: G at the output rises "
          "with training.", vals, +1, ev, unit="log10 G_out trained / init")
    vals, ev = [], []
    for m in models:
        _, o0 = _ends(table, m, "init")
        _, o1 = _ends(table, m, "trained")
        vals.append(math.log10(o1.R / o0.R))
        ev.append(f"{m}: R_out init {o0.R:.3g}, trained {o1.R:.3g} (x{o1.R / o0.R:.2g})")
    claim("R at the output falls by at least a decade with training.", vals, -1, ev,
          magnitude=1.0, unit="log10 R_out trained / init (a decade: -1)")
    vals, ev = [], []
    for m in models:
        _, o1 = _ends(table, m, "trained")
        cf = float(o1.channel_fraction)
        vals.append(cf)
        ev.append(f"{m}: channel share {cf:.2f}, D_out shuffled {o1.D_shuffled:.3g} vs "
                  f"{o1.D:.3g}")
    est = mean_over(vals, what="nets")
    # 0 < share < 1: both bounds, each judged on the interval of the mean share.
    both = all_of([judge(est, +1), judge(type(est)(1 - est.value, 1 - est.hi, 1 - est.lo,
                                                    est.level, est.method), +1)])
    out.append({"text": "Both spatial and channel pooling build the stability of trained nets: "
                        "shuffling the channels of every convolution loses part of it but not "
                        "all (0 < channel share < 1 at the output).",
                "verdict": both, "estimate": est.text(".2f"),
                "evidence": "; ".join(ev) + f"; mean share over nets {est.text('.2f')} "
                f"({est.method})"})
    return out


# ---------------------------------------------------------------------------------- figure


def run(cfg: LayerwiseConfig, ctx: FigureContext) -> FigureOutput:
    """Fig. 3: train the clean nets (shared runs), then ``pooling_report`` per net and stage
    (``<net>/<stage>-<hash>_*.csv``, reused when present), the long table, the figure and the
    claims."""
    from ...plots.reproduce import plot_layerwise
    from ...report import ReportFigure

    configs = run_configs(cfg, device=ctx.options.device, data_root=ctx.options.data_root,
                          data=ctx.options.data)
    failed = ctx.sweep(configs)
    ctx.require_done(configs)
    table = layerwise_tables(cfg, configs, ctx.runs, ctx.out, device=ctx.options.device)
    ctx.write_table(table, "layerwise.csv", cfg)
    title = f"{configs[0].train.data.name}, clean training ({ctx.scale})"
    png = ctx.save_figure(plot_layerwise(table, title), "layerwise")
    fig = ReportFigure(
        "layerwise", "Fig. 3: D_k, G_k, R_k layer by layer, original vs channel-shuffled",
        png, table,
        caption=f"Every layer k of each net, at initialization (grey) and trained (blue); "
        f"dashed: the geometric mean over {cfg.n_shuffles} copies whose convolutions have their "
        f"input channels permuted (one permutation per layer). {cfg.n_probes} clean test probes; "
        f"BatchNorm at init: {cfg.init_batchnorm} statistics, trained: running statistics. "
        "channel_fraction: the share of the log-stability up to layer k that shuffling "
        "destroys (channel pooling); the rest is spatial pooling.",
        files=["layerwise/layerwise.svg", "layerwise/layerwise.pdf", "layerwise/layerwise.csv",
               "layerwise/<net>/<stage>-<hash>_{pooling,sensitivity,spectra}.csv"])
    claims = [{**c, "figure": "layerwise"} for c in layerwise_claims(table)]
    return FigureOutput([fig], claims, failed_runs=failed)


register_figure(Figure(
    "layerwise", number=3, presets=PRESETS, run=run,
    summary="Fig. 3: D_k, G_k, R_k by layer, original vs channel-shuffled nets"))
