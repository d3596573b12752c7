"""The paper's Fig. 4: Laplacian spectra of the convolution filters, at initialization and
after training on clean data.

The nets are the clean runs of :mod:`.noisy_training` (the same run folders as
:mod:`.layerwise`: trained once). For each conv layer of ``init.pt`` and of the measured
checkpoint, :func:`diffeosense.pooling.filter_spectra` gives the mean squared projection of
every filter on the Laplacian eigenvectors of its grid; the homogeneous (lambda = 0) share is
the spatial pooling a layer has learned (a white filter has 1/K).

>>> [n.model for n in PRESETS["quick"].training.nets]
['lenet', 'vgg11bn']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._io import to_jsonable
from ..figure import Figure, FigureContext, FigureOutput, register_figure
from ..run import RunConfig
from . import noisy_training as nt
from .layerwise import PRESETS as LAYERWISE_PRESETS
from .layerwise import checkpoints, clean_nets

__all__ = ["FilterSpectraConfig", "PRESETS", "spectra_tables", "spectra_claims", "run"]


@dataclass(frozen=True)
class FilterSpectraConfig:
    """The nets whose filters are projected: ``training``, a noisy-training grid with
    ``noises=[0.0]`` (its clean runs)."""

    training: nt.NoisyTrainingConfig

    def __post_init__(self) -> None:
        if list(self.training.noises) != [0.0]:
            raise ValueError(f"the filter spectra are of nets trained on clean data: noises "
                             f"must be [0.0], got {self.training.noises}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


PRESETS: dict[str, FilterSpectraConfig] = {
    # The nets of Fig. 3 (the paper shows the spectra of the same nets), same runs.
    "quick": FilterSpectraConfig(clean_nets(nt.PRESETS["quick"], ["lenet", "vgg11bn"])),
    "medium": FilterSpectraConfig(LAYERWISE_PRESETS["medium"].training),
    "paper": FilterSpectraConfig(
        clean_nets(nt.PRESETS["paper"], ["vgg11", "vgg11bn", "alexnet", "lenet"])),
}


def spectra_tables(configs: list[RunConfig], runs: Path):
    """Filter spectra of every conv layer at init and trained: ``model, seed, stage, layer,
    conv, kernel, eigenvalue, fraction`` and, per layer, the homogeneous share
    (``homogeneous`` table: ``model, seed, stage, layer, conv, kernel, fraction, white``);
    ``seed`` is the training seed."""
    import pandas as pd

    from ...pooling import filter_spectra
    from ...train import load_checkpoint

    full, homo = [], []
    for rc in configs:
        name = nt.display_name(rc.train)
        for stage, ck in checkpoints(rc, runs).items():
            model, _, _ = load_checkpoint(ck, map_location="cpu")
            sp = filter_spectra(model)
            t = sp.to_frame()
            t = t[t["eigenvalue"].notna()][["layer", "conv", "kernel", "eigenvalue",
                                             "fraction"]]
            t.insert(0, "stage", stage)
            t.insert(0, "seed", rc.train.seed)
            t.insert(0, "model", name)
            full.append(t)
            h = sp.homogeneous()
            h = h[h["fraction"].notna()]
            h.insert(0, "stage", stage)
            h.insert(0, "seed", rc.train.seed)
            h.insert(0, "model", name)
            homo.append(h)
    return pd.concat(full, ignore_index=True), pd.concat(homo, ignore_index=True)




def spectra_claims(homogeneous) -> list[dict[str, Any]]:
    """Fig. 4's claim from the ``homogeneous`` table of :func:`spectra_tables`: with training
    the filters' homogeneous (lambda = 0) share rises above its init value in most layers.
    Judged on the mean over nets of (share of a net's conv layers where it rose) - 1/2, with
    its bootstrap interval over the nets (a net's training seeds averaged first)."""
    from ..verdicts import judge, mean_over

    ev, shares = [], []
    for m in dict.fromkeys(homogeneous["model"]):
        hm = homogeneous[homogeneous["model"] == m]
        per_seed, lines = [], []
        for _, h in (hm.groupby("seed", sort=False) if "seed" in hm.columns else [(0, hm)]):
            i = h[h["stage"] == "init"].set_index("layer")["fraction"]
            t = h[h["stage"] == "trained"].set_index("layer")["fraction"]
            k = int((t > i).sum())
            if len(t):
                per_seed.append(k / len(t) - 0.5)
            lines.append(f"{k}/{len(t)} layers up, last conv {i.iloc[-1]:.3f} -> "
                         f"{t.iloc[-1]:.3f}")
        if per_seed:
            shares.append(sum(per_seed) / len(per_seed))
        ev.append(f"{m}: " + "; ".join(lines) + f" (white {hm['white'].iloc[-1]:.3f})")
    several = "seed" in homogeneous.columns and \
        homogeneous.groupby("model")["seed"].nunique().max() > 1
    est = mean_over(shares, what="nets (a net's seeds averaged first)" if several else "nets")
    return [{"text": "Training shifts the filter spectra to low Laplacian eigenvalues (spatial "
                     "pooling): the homogeneous share rises above its initial (white) value "
                     "in most conv layers.",
             "verdict": judge(est, +1), "estimate": est.text(),
             "evidence": "; ".join(ev) + f"; mean over nets of (share of layers up) - 1/2: "
             f"{est.text()} ({est.method})"}]


# ---------------------------------------------------------------------------------- figure


def run(cfg: FilterSpectraConfig, ctx: FigureContext) -> FigureOutput:
    """Fig. 4: train the clean nets (shared runs), then the spectra tables, the figure of the
    homogeneous share and the claim."""
    from ...plots.reproduce import plot_spectra
    from ...report import ReportFigure

    configs = nt.run_configs(cfg.training, device=ctx.options.device,
                             data_root=ctx.options.data_root, data=ctx.options.data,
                             train=ctx.options.train)
    failed = ctx.sweep(configs)
    ctx.require_done(configs)
    full, homo = spectra_tables(configs, ctx.runs)
    ctx.write_table(full, "filter_spectra.csv", cfg)
    ctx.write_table(homo, "filter_spectra_homogeneous.csv", cfg)
    title = f"{configs[0].train.data.name}, clean training ({ctx.scale})"
    seeds = sorted(set(homo["seed"]))
    mean = (homo.groupby(["model", "stage", "layer"], sort=False)[["fraction", "white"]]
            .mean().reset_index())  # each net's seeds averaged (one curve per net)
    png = ctx.save_figure(plot_spectra(mean, title), "filter_spectra")
    fig = ReportFigure(
        "filter-spectra", "Fig. 4: filter spectra, homogeneous share at init and trained",
        png, homo,
        caption="For every conv layer, the share of the filters' power on the eigenvalue-0 "
        "(homogeneous) eigenvector of the kernel grid's Laplacian, at initialization and "
        "trained" + (f" (mean over the training seeds {seeds})" if len(seeds) > 1 else "")
        + "; dotted: a white filter (1/K). The full spectra (every eigenvalue) are in "
        "filter_spectra.csv.",
        files=["filter_spectra/filter_spectra.svg", "filter_spectra/filter_spectra.pdf",
               "filter_spectra/filter_spectra.csv"])
    claims = [{**c, "figure": "filter-spectra"} for c in spectra_claims(homo)]
    return FigureOutput([fig], claims, failed_runs=failed)


register_figure(Figure(
    "filter-spectra", number=4, presets=PRESETS, run=run,
    summary="Fig. 4: Laplacian spectra of the filters (homogeneous share), init vs trained",
    units=lambda cfg, o: nt.run_configs(cfg.training, o.device, o.data_root, o.data,
                                        o.train)))
