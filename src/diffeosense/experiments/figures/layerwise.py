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
        seeds: the training seeds whose nets get a pooling report (None: every seed of
            ``training``); the claims average a net's seeds first.
    """

    training: nt.NoisyTrainingConfig
    n_probes: int = 500
    n_shuffles: int = 3
    layers: Any = "all"
    seed: int = 0
    init_batchnorm: str = "batch"
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        if self.training.noises != [0.0]:
            raise ValueError(f"the layer-wise figures are for clean training: noises must be "
                             f"[0.0], got {self.training.noises}")
        if self.init_batchnorm not in ("eval", "batch"):
            raise ValueError(f"init_batchnorm must be 'eval' or 'batch', got "
                             f"{self.init_batchnorm!r}")
        if self.seeds is not None and (not self.seeds
                                       or not set(self.seeds) <= set(self.training.seeds)):
            raise ValueError(f"seeds must be some of the training seeds "
                             f"{self.training.seeds}, got {self.seeds}")
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
    # Medium: the paper's four nets of Fig. 3 from the medium noisy-training grid (the same
    # clean runs, 3 seeds, tracked through training), and EfficientNet-B0 (x 1/4), whose
    # channel mixing is in 1x1 convolutions (depthwise convolutions mix no channels): its
    # spatial/channel split is measured, not assumed. It is not in the noisy grid (an epoch
    # costs ~75 s on one core: 3 noise levels x 3 seeds do not fit); one seed, lr 0.05 as
    # the other BatchNorm CNNs there (its own curve is its run's history).
    "medium": LayerwiseConfig(
        training=dataclasses.replace(
            clean_nets(nt.PRESETS["medium"], ["lenet", "alexnet", "vgg11", "vgg11bn"]),
            nets=[*clean_nets(nt.PRESETS["medium"],
                              ["lenet", "alexnet", "vgg11", "vgg11bn"]).nets,
                  nt.NetSpec("efficientnetb0", {"width_mult": 0.25}, lr=0.05, epochs=10,
                             seeds=[0])]),
        n_probes=500, n_shuffles=3),
    "paper": LayerwiseConfig(
        training=clean_nets(nt.PRESETS["paper"], ["vgg11", "vgg11bn", "alexnet", "lenet"]),
        n_probes=500, n_shuffles=3),
}


def run_configs(cfg: LayerwiseConfig, device: str = "cpu",
                data_root: str | None = None, data: dict[str, Any] | None = None,
                train: dict[str, Any] | None = None) -> list[RunConfig]:
    """The training runs (identical to the clean noisy-training runs: shared hash folders)."""
    return nt.run_configs(cfg.training, device=device, data_root=data_root, data=data,
                          train=train)


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
    G_shuffled, R, R_shuffled, channel_fraction`` (and ``seed``, the training seed, after
    ``model``)."""
    import pandas as pd

    from ...pooling import PoolingReport, pooling_report
    from ...provenance import config_hash
    from ...train import load_checkpoint

    frames = []
    for rc in configs:
        if cfg.seeds is not None and rc.train.seed not in cfg.seeds:
            continue
        name = nt.display_name(rc.train)
        # Named by the former long name: pooling reports measured before stay reused.
        folder = out / _slug(long_name(rc.train.model, rc.train.model_kwargs))
        if len({c.train.seed for c in configs}) > 1:
            folder = folder / f"seed{rc.train.seed}"
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
            t.insert(0, "seed", rc.train.seed)
            t.insert(0, "model", name)
            frames.append(t)
    return pd.concat(frames, ignore_index=True)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def _ends(table, model: str, stage: str, seed=None):
    t = table[(table["model"] == model) & (table["stage"] == stage)]
    if seed is not None:
        t = t[t["seed"] == seed]
    t = t.sort_values("depth")
    return t.iloc[0], t.iloc[-1]


def _seeds(table, model: str) -> list:
    """The training seeds of ``model`` in the table (``[None]`` for a table without seeds)."""
    if "seed" not in table.columns:
        return [None]
    return list(dict.fromkeys(table.loc[table["model"] == model, "seed"]))


def _per_net(table, models, value, describe):
    """Per net, the mean over its seeds of ``value(model, seed)``, and its evidence:
    ``describe(model, seed)`` of each seed (prefixed by the seed when there are several)."""
    vals, ev = [], []
    for m in models:
        seeds = _seeds(table, m)
        vals.append(sum(value(m, sd) for sd in seeds) / len(seeds))
        if len(seeds) == 1:
            ev.append(f"{m}: {describe(m, seeds[0])}")
        else:
            ev.append(f"{m}: " + ", ".join(f"seed {sd} {describe(m, sd)}" for sd in seeds))
    return vals, ev


def mean_over_seeds(table):
    """The long table with each net's seeds averaged (D, G, R and their shuffled values
    geometrically, the channel share arithmetically): one curve per net and stage."""
    import numpy as np

    if "seed" not in table.columns:
        return table
    keys = ["model", "stage", "layer", "depth", "kind"]
    logs = ["D", "D_shuffled", "G", "G_shuffled", "R", "R_shuffled"]
    with np.errstate(divide="ignore"):  # a D of exactly 0 (a constant layer) stays 0
        g = table.assign(**{c: np.log(table[c]) for c in logs})
    out = g.groupby(keys, sort=False)[[*logs, "channel_fraction"]].mean().reset_index()
    return out.assign(**{c: np.exp(out[c]) for c in logs})


def layerwise_claims(table) -> list[dict[str, Any]]:
    """The claims of Fig. 3, from the long table of :func:`layerwise_tables` (first row: the
    input, last: the output of each net). Each is judged on the mean over the nets of a
    per-net number (a log10 ratio, or the channel share), with its bootstrap interval over
    the nets (:mod:`~diffeosense.experiments.verdicts`)."""
    from ..verdicts import all_of, judge, mean_over

    models = list(dict.fromkeys(table["model"]))
    out = []

    several = "seed" in table.columns and table.groupby("model")["seed"].nunique().max() > 1
    what = "nets (a net's seeds averaged first)" if several else "nets"

    def claim(text, values, sign, ev, magnitude=None, unit="log10"):
        est = mean_over(values, what=what)
        out.append({"text": text, "verdict": judge(est, sign, magnitude=magnitude),
                    "estimate": est.text(), "evidence": "; ".join(ev)
                    + f"; mean {unit} over nets {est.text()} ({est.method})"})

    def ratios(m, sd):
        i0, o0 = _ends(table, m, "init", sd)
        i1, o1 = _ends(table, m, "trained", sd)
        return o0.D / i0.D, o1.D / i1.D

    vals, ev = _per_net(
        table, models, lambda m, sd: math.log10(ratios(m, sd)[1] / ratios(m, sd)[0]),
        lambda m, sd: "D_out/D_in init {:.3g}, trained {:.3g}".format(*ratios(m, sd)))
    claim("Training makes the deep representation stable to diffeomorphisms: D falls from "
          "input to output after training, more than at init.", vals, -1, ev,
          unit="log10 (trained / init) of D_out/D_in")

    def outs(m, sd):
        return _ends(table, m, "init", sd)[1], _ends(table, m, "trained", sd)[1]

    def out_ratio(q):
        return lambda m, sd: math.log10(outs(m, sd)[1][q] / outs(m, sd)[0][q])

    vals, ev = _per_net(table, models, out_ratio("G"), lambda m, sd: (
        "G_out init {:.3g}, trained {:.3g}".format(*(o.G for o in outs(m, sd)))))
    claim("Training makes the output more sensitive to white noise: G at the output rises "
          "with training.", vals, +1, ev, unit="log10 G_out trained / init")

    def r_text(m, sd):
        o0, o1 = outs(m, sd)
        return f"R_out init {o0.R:.3g}, trained {o1.R:.3g} (x{o1.R / o0.R:.2g})"

    vals, ev = _per_net(table, models, out_ratio("R"), r_text)
    claim("R at the output falls by at least a decade with training.", vals, -1, ev,
          magnitude=1.0, unit="log10 R_out trained / init (a decade: -1)")

    def share(m, sd):
        return float(outs(m, sd)[1].channel_fraction)

    def share_text(m, sd):
        o1 = outs(m, sd)[1]
        return (f"channel share {float(o1.channel_fraction):.2f}, D_out shuffled "
                f"{o1.D_shuffled:.3g} vs {o1.D:.3g}")

    vals, ev = _per_net(table, models, share, share_text)
    est = mean_over(vals, what=what)
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


# ------------------------------------------------------------------ when does R fall


#: A training error at or below this is "zero" (the interpolation point of the paper's
#: discussion: R may fall before, or only after, the net fits its training set).
ZERO_TRAIN_ERROR = 0.01


def tracking_table(configs: list[RunConfig], runs: Path):
    """The output rows of the tracked runs' ``train/track.csv`` (D, G, R at the tracked
    epochs, measured while training), one table: ``model, seed, epoch, D, G, R, D_se, G_se,
    R_se, train_error, test_error``; None when no run was tracked."""
    import pandas as pd

    from ..._io import read_table

    frames = []
    for rc in configs:
        if rc.track is None:
            continue
        folder = run_dir(rc, runs) / "train"
        path = folder / f"track.{rc.track.get('format', 'csv')}"
        t, _ = read_table(path, what="tracking table")
        t = t[t["view"] == "full"]
        t = t[t["depth"] == t["depth"].max()]
        t = t[["epoch", "D", "G", "R", "D_se", "G_se", "R_se", "train_error", "test_error"]]
        t.insert(0, "seed", rc.train.seed)
        t.insert(0, "model", nt.display_name(rc.train))
        frames.append(t)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).sort_values(["model", "seed", "epoch"],
                                                           kind="stable")


def when_table(track):
    """When R at the output falls, per tracked net and seed, from :func:`tracking_table`:
    ``model, seed, R_init, R_last, fall`` (R_init / R_last), ``epoch_half`` (the first
    tracked epoch at which log R has made half of its net change), ``epoch_zero`` (the first
    epoch whose training error is <= :data:`ZERO_TRAIN_ERROR`; NaN: never),
    ``min_train_error`` and ``when``: ``"not at all"`` (R_last >= R_init), ``"early"`` (half
    of the fall before the training error reaches zero, or it never does), ``"late"``
    (after).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"model": "a", "seed": 0, "epoch": [0, 1, 2, 4],
    ...                   "R": [1.0, 0.9, 0.3, 0.1], "train_error": [float("nan"), 0.2, 0.0, 0.0]})
    >>> when_table(t)[["epoch_half", "epoch_zero", "when"]].values.tolist()
    [[2, 2.0, 'late']]
    """
    import math

    import numpy as np
    import pandas as pd

    rows = []
    for (m, sd), t in track.groupby(["model", "seed"], sort=False):
        t = t.sort_values("epoch")
        lr = np.log(t["R"].to_numpy(dtype=float))
        ep = t["epoch"].to_numpy()
        change = lr[-1] - lr[0]
        half = int(ep[np.argmax(lr <= lr[0] + change / 2)]) if change < 0 else None
        err = t["train_error"].to_numpy(dtype=float)
        zero = ep[np.nan_to_num(err, nan=1.0) <= ZERO_TRAIN_ERROR]
        z = float(zero[0]) if len(zero) else math.nan
        when = ("not at all" if change >= 0 else
                "late" if math.isfinite(z) and half >= z else "early")
        rows.append({"model": m, "seed": sd, "R_init": float(t["R"].iloc[0]),
                     "R_last": float(t["R"].iloc[-1]), "fall": math.exp(-change),
                     "epoch_half": half, "epoch_zero": z,
                     "min_train_error": float(np.nanmin(err)) if np.isfinite(err).any()
                     else math.nan, "last_epoch": int(ep[-1]), "when": when})
    return pd.DataFrame(rows)


def when_summary(when) -> str:
    """One sentence per net: when its R at the output fell, over its seeds."""
    parts = []
    for m, w in when.groupby("model", sort=False):
        counts = w["when"].value_counts()
        verdicts = ", ".join(f"{k} in {v} of {len(w)} seed(s)" for k, v in counts.items())
        z = w["epoch_zero"]
        zero = ("the training error never reached zero (lowest "
                f"{w['min_train_error'].min():.1%})" if z.isna().all()
                else f"training error zero from epoch {z.min():g}")
        fall = ", ".join(f"x{1 / f:.2g}" for f in w["fall"])
        parts.append(f"{m}: R_out {fall} over {int(w['last_epoch'].max())} epochs, falls "
                     f"{verdicts}; {zero}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- figure


def run(cfg: LayerwiseConfig, ctx: FigureContext) -> FigureOutput:
    """Fig. 3: train the clean nets (shared runs), then ``pooling_report`` per net and stage
    (``<net>/<stage>-<hash>_*.csv``, reused when present), the long table, the figure and the
    claims."""
    from ...plots.reproduce import plot_layerwise
    from ...report import ReportFigure

    configs = run_configs(cfg, device=ctx.options.device, data_root=ctx.options.data_root,
                          data=ctx.options.data, train=ctx.options.train)
    failed = ctx.sweep(configs)
    ctx.require_done(configs)
    table = layerwise_tables(cfg, configs, ctx.runs, ctx.out, device=ctx.options.device)
    ctx.write_table(table, "layerwise.csv", cfg)
    title = f"{configs[0].train.data.name}, clean training ({ctx.scale})"
    seeds = sorted(set(table["seed"]))
    png = ctx.save_figure(plot_layerwise(mean_over_seeds(table), title), "layerwise")
    fig = ReportFigure(
        "layerwise", "Fig. 3: D_k, G_k, R_k layer by layer, original vs channel-shuffled",
        png, table,
        caption="Every layer k of each net, at initialization (grey) and trained (blue)"
        + (f", geometric mean over the training seeds {seeds}" if len(seeds) > 1 else "")
        + "; "
        f"dashed: the geometric mean over {cfg.n_shuffles} copies whose convolutions have their "
        f"input channels permuted (one permutation per layer). {cfg.n_probes} clean test probes; "
        f"BatchNorm at init: {cfg.init_batchnorm} statistics, trained: running statistics. "
        "channel_fraction: the share of the log-stability up to layer k that shuffling "
        "destroys (channel pooling); the rest is spatial pooling.",
        files=["layerwise/layerwise.svg", "layerwise/layerwise.pdf", "layerwise/layerwise.csv",
               "layerwise/<net>/<stage>-<hash>_{pooling,sensitivity,spectra}.csv"])
    claims = [{**c, "figure": "layerwise"} for c in layerwise_claims(table)]
    figures = [fig]
    track = tracking_table(configs, ctx.runs)
    if track is not None:
        from ...plots.reproduce import plot_tracking

        when = when_table(track)
        ctx.write_table(track, "layerwise_tracking.csv", cfg)
        ctx.write_table(when, "layerwise_when.csv", cfg)
        png = ctx.save_figure(plot_tracking(track, title), "layerwise_tracking")
        figures.append(ReportFigure(
            "layerwise-tracking", "When R falls: D, G, R at the output through training",
            png, when,
            caption="D, G and R at the output of the tracked nets, at log-spaced epochs (0: "
            "the initialization), measured while training on fixed probes, diffeos and noise "
            "(one line per training seed); the lower panel is the training error (running "
            f"mean over the epoch). 'when': early if R made half of its fall before the "
            f"training error reached {ZERO_TRAIN_ERROR:.0%} (or never did), late if after, "
            f"not at all if it did not fall. " + when_summary(when) + ".",
            files=["layerwise/layerwise_tracking.svg", "layerwise/layerwise_tracking.pdf",
                   "layerwise/layerwise_tracking.csv", "layerwise/layerwise_when.csv"]))
    return FigureOutput(figures, claims, failed_runs=failed)


register_figure(Figure(
    "layerwise", number=3, presets=PRESETS, run=run,
    summary="Fig. 3: D_k, G_k, R_k by layer, original vs channel-shuffled nets",
    units=lambda cfg, o: run_configs(cfg, o.device, o.data_root, o.data, o.train)))
