"""The paper's Fig. 1 (right): nets trained on noisy images, test error against D, G, R.

Architectures x training noise levels s: every net is trained on images corrupted by Gaussian
noise of L2 norm s (fresh each epoch, train and test: ``DataConfig(noise=s, noise_on="both")``)
and its output is measured on probes corrupted the same way (``RunConfig(probe_noise="train")``).
At each noise level, across the architectures, the correlation of the logarithms

    rho(eps, X) = Cov(log eps, log X) / sqrt(Var log eps  Var log X),   X in {D, G, R}

says whether the test error eps grows with D and R and falls with G, as the paper reports.

Every run is a :class:`~diffeosense.experiments.run.RunConfig` executed by the sweep engine
(:func:`~diffeosense.experiments.sweep.run_sweep`): the grid resumes after a kill and a
finished run is never recomputed. The presets (:data:`PRESETS`, one per scale of ``diffeosense
reproduce``) state every hyperparameter and why it was chosen. The figure (:func:`run`,
registered as ``noisy-training``) writes ``noisy_training_runs.csv`` (one row per run),
``noisy_training_correlations.csv`` (rho per noise level and X), the scatter and the
correlations (PNG, SVG) and the claims.

>>> round(log_correlation([math.e, math.e**2, math.e**3], [math.e**2, math.e**4, math.e**7]), 5)
0.99339
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import dataclass_from_dict, to_jsonable
from ...data import DataConfig
from ...train import TrainConfig
from ..figure import Figure, FigureContext, FigureOutput, register_figure
from ..run import RunConfig, load_run, run_dir

__all__ = ["NetSpec", "NoisyTrainingConfig", "PRESETS", "log_correlation", "run_configs",
           "results_table", "correlation_table", "claims", "run", "display_name"]


@dataclass(frozen=True)
class NetSpec:
    """One architecture of the grid and its training recipe (``None``: the recipe's default,
    see :class:`~diffeosense.train.TrainConfig`)."""

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    optimizer: str = "auto"
    weight_decay: float | None = None
    epochs: int | None = None  # None: the config's epochs
    track: bool = False  # its clean runs track every layer through training (config.track)
    seeds: list[int] | None = None  # None: the config's seeds


@dataclass(frozen=True)
class NoisyTrainingConfig:
    """The grid of Fig. 1: ``nets x noises`` (x ``seeds``), trained and measured at the output.

    Attributes:
        nets: the architectures and their recipes.
        noises: training (and probe) noise norms s.
        dataset, P, augment: the data (``P`` training images, None: all).
        epochs, batch_size, schedule: the common recipe (per-net ``epochs`` override).
        seeds: training seeds; each (net, noise, seed) is one run.
        n_probes, stage: probes measured at the output, and which weights (``"best"``: the
            best-test-error checkpoint, as the paper; ``"trained"``: the last epoch).
        track: the :class:`~diffeosense.tracking.TrackConfig` fields with which the clean
            (s = 0) runs of the nets marked ``track=True`` measure D, G, R of their layers
            through training (``train/track.csv``: when R falls, Fig. 3); None: no tracking.
        rationale: why these hyperparameters (shown in the report).
    """

    nets: list[NetSpec]
    noises: list[float]
    dataset: str = "mnist-embedded"
    P: int | None = None
    augment: bool = False
    epochs: int = 3
    batch_size: int = 128
    schedule: str = "cosine"
    seeds: list[int] = field(default_factory=lambda: [0])
    n_probes: int = 500
    stage: str = "best"
    track: dict[str, Any] | None = None
    rationale: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "nets", [
            n if isinstance(n, NetSpec) else dataclass_from_dict(NetSpec, n) for n in self.nets])
        if not self.nets or not self.noises:
            raise ValueError("a noisy-training grid needs at least one net and one noise level")
        if any(not (s >= 0) for s in self.noises):
            raise ValueError(f"noise levels are L2 norms and must be >= 0, got {self.noises}")
        if self.stage not in ("best", "trained"):
            raise ValueError(f"stage must be 'best' or 'trained', got {self.stage!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


_CNN_RECIPE = "SGD momentum 0.9, weight decay 5e-4 on weights, cosine schedule, batch 128"

PRESETS: dict[str, NoisyTrainingConfig] = {
    # Chosen from training curves on clean and s = 30 data, before any sensitivity was looked at
    # (docs/results/reproduce_quick/training_curves.md): the paper's CIFAR rate lr = 0.1 leaves
    # VGG11-BN at 53 % test error after 5 epochs on these 4000 digits (epoch-1 test loss 212),
    # lr = 0.01 reaches 1.9 % in 3 epochs; LeNet at 0.01 is at 19 % after 3 epochs, at 0.05 at
    # 6.5 %; the 3-layer CNN without BatchNorm is still at 37 % (lr 0.05) or chance (0.01)
    # after 3 epochs, with BatchNorm at 9 % (lr 0.05).
    "quick": NoisyTrainingConfig(
        nets=[NetSpec("fc2"), NetSpec("fc4"), NetSpec("lenet", lr=0.05),
              NetSpec("simplecnn", {"depth": 3, "width": 32, "batch_norm": True}, lr=0.05),
              NetSpec("vgg11bn", lr=0.01)],
        noises=[0.0, 1.0, 10.0, 30.0],
        dataset="mnist-embedded", P=None, augment=False, epochs=3, n_probes=500, stage="best",
        rationale=(
            "Quick scale, for 2 CPU cores: the 5000 embedded MNIST digits (4000 train, 1000 "
            "test), 5 small nets instead of 13, 4 noise levels instead of 7, 3 epochs, one "
            "seed. Fully connected nets: Adam lr 1e-3, no weight decay (the paper's). CNNs: "
            + _CNN_RECIPE + "; lr chosen from training curves before any sensitivity was "
            "measured: the paper's CIFAR rate 0.1 does not train VGG11-BN here (53 % test "
            "error after 5 epochs), 0.01 does (1.9 % after 3); LeNet reaches 6.5 % in 3 "
            "epochs at 0.05 (19 % at 0.01); the 3-layer CNN (width 32) needs BatchNorm to "
            "learn in 3 epochs (9 % at 0.05; 37 % without BN). MNIST images have norm "
            "about 28 after normalization, so s = 30 corrupts them as much as s ~ 55 does "
            "CIFAR-10 images."),
    ),
    # Medium: chosen from training curves on the full Fashion-MNIST (P = 10000, clean data, 10
    # or 15 epochs; docs/results/reproduce_medium/training_curves.md) before any sensitivity
    # was measured; widths and epochs from the per-epoch costs there, to fit 2 h on 2 cores.
    "medium": NoisyTrainingConfig(
        nets=[NetSpec("fc2", epochs=30), NetSpec("fc4", epochs=30),
              NetSpec("lenet", lr=0.05, epochs=30, track=True),
              NetSpec("alexnet", {"width_mult": 0.25}, lr=0.05, epochs=20, track=True),
              NetSpec("vgg11", {"width_mult": 0.25}, lr=0.05, track=True),
              NetSpec("vgg11bn", {"width_mult": 0.25}, lr=0.01, track=True),
              NetSpec("resnet18", {"width_mult": 0.125}, lr=0.05)],
        noises=[0.0, 10.0, 30.0],
        dataset="fashion-mnist", P=10000, augment=False, epochs=10, seeds=[0, 1, 2],
        n_probes=500, stage="best",
        track={"schedule": "log", "n_probes": 200, "layers": "all"},
        rationale=(
            "Medium scale, for 2 CPU cores overnight (about 2 h): the full Fashion-MNIST "
            "(Debian package dataset-fashion-mnist, or --data-root), 10000 training images "
            "(the first 10000 of the 60000: what the budget allows), all 10000 test images for "
            "the test error; 7 of the paper's architectures, the CNNs narrowed (width_mult: "
            "every channel count x 1/4, ResNet-18 x 1/8) so that one epoch costs 8-25 s on "
            "one core; 3 noise levels, 3 seeds. Fully connected nets: Adam lr 1e-3 (the "
            "paper's); CNNs: " + _CNN_RECIPE + ". Learning rates from clean training curves "
            "before any sensitivity was measured, by one rule: the rate with the lowest final "
            "training loss among those within 1 point of the best final test error: LeNet "
            "0.05 (0.02 tried), AlexNet 0.05 (at 0.01: 38 % test error after 10 epochs), VGG11 "
            "0.05 (at 0.01 it stays at chance for 10 epochs; at 0.05 it starts after 3 and "
            "ends at 18 %), VGG11-BN 0.01 (training loss 0.013, test 11.1 %; at 0.05: 0.048, "
            "10.5 %), ResNet-18 0.05 (0.074, 10.9 %; at 0.01: 0.078, 12.1 %). Epochs: 10 for "
            "the VGGs and ResNet (VGG11-BN's and ResNet's training loss is at 0.013-0.07 "
            "after 10; VGG11's is not at its plateau, 0.46, a budget limit); the curves of LeNet (15 epochs), AlexNet (10) and the fully "
            "connected nets (15) were still falling 1-5 % per epoch at their end, so they "
            "train 20-30 epochs (cheap), whether that reaches the plateau is in their "
            "histories (metrics.jsonl). The clean runs of the nets of Fig. 3 track D, G, R "
            "of every layer at log-spaced epochs (200 test probes). Fashion-MNIST images "
            "have norm about 28 after normalization: s = 10 is a visible corruption, s = 30 "
            "as large as the image."),
    ),
    "paper": NoisyTrainingConfig(
        nets=[NetSpec(m) for m in ("vgg11", "vgg11bn", "vgg16bn", "vgg19bn", "alexnet", "lenet",
                                   "resnet18", "resnet34", "resnet50", "efficientnetb0")]
        + [NetSpec(m) for m in ("fc2", "fc4", "fc6")],
        noises=[0.0, 0.01, 0.1, 1.0, 10.0, 30.0, 100.0],
        dataset="cifar10", P=None, augment=True, epochs=200, n_probes=500, stage="best",
        rationale=(
            "The paper's grid on CIFAR-10: 10 CNNs and 3 fully connected nets, 7 noise levels; "
            "CNNs: lr 0.1, " + _CNN_RECIPE + ", random crop (pad 4) and flip; fully connected "
            "nets: Adam lr 1e-3, no decay; best test-error checkpoint; 500 probes. 200 epochs "
            "is our choice (the spec does not state the paper's). Meant for a GPU cluster "
            "(diffeosense reproduce ... --backend slurm --device cuda). Expected cost: about "
            "40 GPU-hours, 91 runs of up to 1.5 h each: benchmarks/paper_cost.py counts 2.0e18 "
            "training FLOPs (torch's FlopCounterMode, forward + backward per image x 50000 "
            "images + 10000 evaluated, x 200 epochs, x 7 noise levels, for the 13 nets; "
            "ResNet-34/50 are 55 % of it) and divides by an assumed sustained 15 TFLOP/s; this "
            "was not timed on a GPU: time one epoch there and scale by the per-net epoch FLOPs "
            "in benchmarks/results/paper_cost.json."),
    ),
}


def run_configs(cfg: NoisyTrainingConfig, device: str = "cpu",
                data_root: str | None = None, data: dict[str, Any] | None = None,
                train: dict[str, Any] | None = None) -> list[RunConfig]:
    """The sweep's units: one :class:`RunConfig` per (net, noise, seed), in that order;
    ``data``: DataConfig fields replacing the preset's (``name`` for ``dataset``, ``resize``,
    ...; :attr:`~diffeosense.experiments.figure.ReproduceOptions.data`); ``train``: the
    fast-path TrainConfig fields (:attr:`~diffeosense.experiments.figure.ReproduceOptions.
    train`)."""
    out = []
    for net in cfg.nets:
        for s in cfg.noises:
            for seed in (net.seeds if net.seeds is not None else cfg.seeds):
                dc = DataConfig(**{"name": cfg.dataset, "P": cfg.P, "augment": cfg.augment,
                                   "noise": float(s), "noise_on": "both", "root": data_root,
                                   **(data or {})})
                tc = TrainConfig(
                    model=net.model, model_kwargs=copy.deepcopy(net.model_kwargs), data=dc,
                    epochs=net.epochs or cfg.epochs, batch_size=cfg.batch_size,
                    optimizer=net.optimizer, lr=net.lr, weight_decay=net.weight_decay,
                    schedule=cfg.schedule, seed=seed, device=device, keep_every=0,
                    **(train or {}))
                track = cfg.track if net.track and s == 0 and cfg.track is not None else None
                out.append(RunConfig(train=tc, layers=["output"], stages=[cfg.stage],
                                     n_probes=cfg.n_probes, probe_noise="train", seed=0,
                                     track=copy.deepcopy(track)))
    return out


def results_table(cfg: NoisyTrainingConfig, configs: list[RunConfig], root: str | Path):
    """One row per finished run: ``model, noise, seed, test_error, epochs_run, D, G, R, D_se,
    G_se, R_se, run``; ``test_error`` is that of the measured checkpoint."""
    import pandas as pd

    rows = []
    for rc in configs:
        folder = run_dir(rc, root)
        r = load_run(folder)
        res = r["tables"][cfg.stage]
        out = res["output"]
        err = res.config.get("test_error")
        rows.append({"model": display_name(rc.train), "noise": rc.train.data.noise,
                     "seed": rc.train.seed,
                     "test_error": float(err if err is not None else r["done"]["test_error"]),
                     "epochs_run": r["done"]["epochs_run"],
                     **{k: float(out[k]) for k in ("D", "G", "R", "D_se", "G_se", "R_se")},
                     "run": folder.name})
    return pd.DataFrame(rows)


def display_name(t: TrainConfig) -> str:
    """The net of a run as the figures and tables name it (:func:`diffeosense.models.names.
    display_name` of its spec and options): ``lenet``, ``simplecnn-3x32-bn``."""
    from ...models.names import display_name as short

    return short(t.model, t.model_kwargs)


def log_correlation(eps, x) -> float:
    """``rho(eps, X) = Cov(log eps, log X) / sqrt(Var log eps Var log X)`` (Pearson correlation
    of the logarithms; the 1/n or 1/(n-1) of Cov and Var cancels).

    eps, x: ``[n]`` positive values (n >= 3; NaN otherwise, and when either log is constant).
    A zero or negative value has no logarithm: ``ValueError``.
    """
    a, b = np.asarray(eps, dtype=float), np.asarray(x, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"eps and X must be 1D of the same length, got {a.shape} and {b.shape}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("rho(eps, X) correlates logarithms: every value must be > 0 (a test "
                         "error of exactly 0 has no logarithm; measure on more test images)")
    if len(a) < 3:
        return math.nan
    la, lb = np.log(a) - np.log(a).mean(), np.log(b) - np.log(b).mean()
    den = math.sqrt(float((la**2).sum() * (lb**2).sum()))
    return float((la * lb).sum() / den) if den > 0 else math.nan


def correlation_table(results):
    """``noise, X, rho, n_nets`` for X in D, G, R: rho(eps, X) across the nets at each noise
    level (seeds averaged first, geometrically), plus ``noise = "all"`` pooling every run."""
    import pandas as pd

    per_net = _per_net(results)
    rows = []
    for s, sub in per_net.groupby("noise", sort=True):
        for q in ("D", "G", "R"):
            rows.append({"noise": float(s), "X": q,
                         "rho": log_correlation(sub["test_error"], sub[q]), "n_nets": len(sub)})
    return pd.DataFrame(rows)


def _per_net(results):
    """``noise, model, test_error, D, G, R``: each net at each noise level, its seeds averaged
    geometrically."""
    g = results.assign(**{c: np.log(results[c]) for c in ("test_error", "D", "G", "R")})
    per_net = g.groupby(["noise", "model"], sort=True)[["test_error", "D", "G", "R"]].mean()
    return np.exp(per_net).reset_index()


def mean_rho_estimate(results, q: str, minus: str | None = None):
    """The mean over noise levels of rho(eps, q) across the nets (minus that of ``minus``),
    with a bootstrap interval over the nets: a resample draws nets with replacement and keeps
    each drawn net at every noise level (:func:`~diffeosense.experiments.verdicts.bootstrap`).
    """
    from ..verdicts import bootstrap

    per_net = _per_net(results)
    # [level, net] matrices of log values (NaN: that net has no run at that level)
    wide = {c: per_net.pivot(index="noise", columns="model", values=c)
            for c in ("test_error", q, *([minus] if minus else []))}
    models = list(wide["test_error"].columns)
    logs = {c: np.log(w[models].to_numpy(dtype=float)) for c, w in wide.items()}

    def rho(le, lx):  # Pearson of logs over the finite entries of one level
        ok = np.isfinite(le) & np.isfinite(lx)
        if ok.sum() < 3:
            return math.nan
        a, b = le[ok] - le[ok].mean(), lx[ok] - lx[ok].mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / den) if den > 0 else math.nan

    def stat(idx):
        if len(set(idx.tolist())) < 3:
            return math.nan
        e = logs["test_error"][:, idx]
        vals = []
        for k in range(e.shape[0]):
            r = rho(e[k], logs[q][k, idx])
            if minus is not None:
                r -= rho(e[k], logs[minus][k, idx])
            if math.isfinite(r):
                vals.append(r)
        return float(np.mean(vals)) if vals else math.nan

    several = results.groupby(["noise", "model"])["seed"].nunique().max() > 1
    return bootstrap(len(models), stat,
                     what="nets (a net's seeds averaged first)" if several else "nets")


def claims(results, corr) -> list[dict[str, Any]]:
    """The paper's Fig. 1 claims, each with this run's verdict and the numbers behind it:
    ``{"text", "verdict", "estimate", "evidence"}``. A correlation claim is judged on the mean
    over noise levels of rho(eps, X) across the nets, with its bootstrap interval over the
    nets (:mod:`~diffeosense.experiments.verdicts`: shown, not shown, contradicted, or None
    when no level has three nets)."""
    from ..verdicts import NOT_SHOWN, SHOWN, judge

    out = []

    def rhos(q):
        sel = corr[corr["X"] == q].sort_values("noise")
        return [(s, r) for s, r in zip(sel["noise"], sel["rho"], strict=True)
                if not math.isnan(r)]

    def rho_claim(q, sign, text, minus=None):
        est = mean_rho_estimate(results, q, minus)
        if minus is None:
            ev = "; ".join(f"s={s:g}: {r:+.2f}" for s, r in rhos(q))
            ev = f"rho(eps,{q}) {ev}"
        else:
            rd, rr = dict(rhos(minus)), dict(rhos(q))
            ev = "; ".join(f"s={s:g}: {q} {rr[s]:+.2f} vs {minus} {rd[s]:+.2f}"
                           for s in sorted(set(rd) & set(rr)))
        out.append({"text": text, "verdict": judge(est, sign), "estimate": est.text(),
                    "evidence": f"{ev}; mean over levels {est.text()} ({est.method})"})

    rho_claim("D", +1, "Test error is positively correlated with D at the output, also when "
                       "training with noise: rho(eps, D) > 0.")
    rho_claim("G", -1, "Test error is negatively correlated with G: rho(eps, G) < 0.")
    rho_claim("R", +1, "Test error is positively correlated with R: rho(eps, R) > 0.")
    rho_claim("R", +1, "R correlates best with the error: rho(eps, R) > rho(eps, D).",
              minus="D")
    learned = results.groupby("model")["test_error"].max()
    worst = results.loc[results["test_error"].idxmax()]
    clean = results[results["noise"] == results["noise"].min()]
    out.append({
        "text": "Every net learns (a check of this run, not a claim of the paper): clean-data "
                "test error far below chance (90 %).",
        "verdict": SHOWN if bool((clean["test_error"] < 0.5).all()) else NOT_SHOWN,
        "estimate": None,
        "evidence": "clean test error: " + ", ".join(
            f"{m} {e:.1%}" for m, e in clean.groupby("model")["test_error"].mean().items())
        + f"; worst over all noise levels: {worst['model']} at s={worst['noise']:g}, "
          f"{learned.max():.1%}"})
    return out


# ---------------------------------------------------------------------------------- figure


def run(cfg: NoisyTrainingConfig, ctx: FigureContext) -> FigureOutput:
    """Fig. 1: train and measure the grid, then the runs' table, the correlations, the
    scatter and the correlation plot, and the claims."""
    from ...plots.reproduce import plot_noisy_correlations, plot_noisy_scatter
    from ...report import ReportFigure

    configs = run_configs(cfg, device=ctx.options.device, data_root=ctx.options.data_root,
                          data=ctx.options.data, train=ctx.options.train)
    failed = ctx.sweep(configs)
    done = ctx.require_done(configs, at_least=3)
    results = results_table(cfg, done, ctx.runs)
    corr = correlation_table(results)
    ctx.write_table(results, "noisy_training_runs.csv", cfg)
    ctx.write_table(corr, "noisy_training_correlations.csv", cfg)
    title = (f"{configs[0].train.data.name}, {len(cfg.nets)} nets x {len(cfg.noises)} "
             f"noise levels "
             f"({ctx.scale})")
    scatter = ctx.save_figure(plot_noisy_scatter(results, title), "noisy_training_scatter")
    corr_png = ctx.save_figure(plot_noisy_correlations(corr, title),
                               "noisy_training_correlations")
    figures = [
        ReportFigure(
            "noisy-scatter", "Fig. 1 (scatter): test error against D, G, R at the output",
            scatter, results,
            caption="One point per net (marker) and training noise s (colour); D, G, R measured "
            "at the output on probes corrupted with the training noise; test error on the "
            "noisy test set, of the measured (best) checkpoint.",
            files=["noisy_training/noisy_training_scatter.svg",
                   "noisy_training/noisy_training_scatter.pdf",
                   "noisy_training/noisy_training_runs.csv"]),
        ReportFigure(
            "noisy-correlations", "Fig. 1 (right): rho(eps, X) against the training noise",
            corr_png, corr,
            caption="rho(eps, X) = Cov(log eps, log X) / sqrt(Var log eps Var log X) across the "
            "nets at each training noise level, for X = D, G, R.",
            files=["noisy_training/noisy_training_correlations.svg",
                   "noisy_training/noisy_training_correlations.pdf",
                   "noisy_training/noisy_training_correlations.csv"]),
    ]
    cl = [{**c, "figure": "noisy-correlations"} for c in claims(results, corr)]
    cl[-1]["figure"] = "noisy-scatter"
    return FigureOutput(figures, cl, failed_runs=failed)


register_figure(Figure(
    "noisy-training", number=1, presets=PRESETS, run=run,
    summary="Fig. 1: test error against D, G, R of nets trained with noise",
    units=lambda cfg, o: run_configs(cfg, o.device, o.data_root, o.data, o.train)))
