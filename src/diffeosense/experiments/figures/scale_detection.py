"""The paper's Figs. 7-9: the scale-detection task, 1D CNNs against the theory of spatial
pooling (Fig. 7) and deep nets on the 2D task (Figs. 8, 9).

The figure composes the two experiments, :mod:`diffeosense.experiments.scale_detection` (1D)
and :mod:`diffeosense.experiments.scale_detection_2d` (2D), whose units (one
:class:`~diffeosense.experiments.run.RunConfig` per net and seed) run on the backend of
``reproduce``; their run folders are ``<out>/scale_detection/1d/`` and ``.../2d/`` (finished
units are reused, also those of ``diffeosense scale-detection --out <out>/scale_detection/1d``).
A preset is a pair of the experiments' own presets.

>>> PRESETS["quick"].d1.preset, PRESETS["quick"].d2.preset
('small', 'quick')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .. import scale_detection as sd1
from .. import scale_detection_2d as sd2
from ..figure import Figure, FigureContext, FigureOutput, register_figure

__all__ = ["ScaleDetectionFigureConfig", "PRESETS", "run"]


@dataclass(frozen=True)
class ScaleDetectionFigureConfig:
    """The 1D experiment's config (``d1``) and the 2D experiment's (``d2``)."""

    d1: sd1.ScaleDetectionExperiment
    d2: sd2.DeepScaleDetectionExperiment

    def to_dict(self) -> dict[str, Any]:
        return {"1d": self.d1.to_dict(), "2d": self.d2.to_dict()}


PRESETS: dict[str, ScaleDetectionFigureConfig] = {
    # The experiments' own presets, whose reasons are stated there: 1D ``small`` (the authors'
    # setting at width 128, 3 seeds) and 2D ``quick`` (P = 1024, 20 epochs, for 2 CPU cores).
    "quick": ScaleDetectionFigureConfig(sd1.preset("small"), sd2.preset("quick")),
    # The paper's sizes: 1D ``paper`` (H = 1000, 10 seeds), 2D ``paper`` (300 epochs).
    "paper": ScaleDetectionFigureConfig(sd1.preset("paper"), sd2.preset("paper")),
}


def run(cfg: ScaleDetectionFigureConfig, ctx: FigureContext) -> FigureOutput:
    """Figs. 7-9: run both experiments (their units on the options' backend), draw their
    figures, write the 1D exponents and the 2D summary, and the claims."""
    from ...plots import scale_detection as p1
    from ...plots import scale_detection_2d as p2
    from ...report import ReportFigure

    opts, out = ctx.options, ctx.out
    cfg1 = dataclasses.replace(cfg.d1, device=opts.device)
    cfg2 = dataclasses.replace(cfg.d2, device=opts.device)
    r1 = sd1.run(cfg1, out / "1d", progress=opts.progress, backend=opts.backend,
                 workers=opts.workers, **opts.backend_options)
    r2 = sd2.run(cfg2, out / "2d", progress=opts.progress, backend=opts.backend,
                 workers=opts.workers, **opts.backend_options)
    # Each PNG comes with its SVG and PDF (diffeosense.plots._save.save_figure).
    p1.save_result_figure(r1, out / "scale_detection_1d.png")
    p2.save_result_figure(r2, out / "scale_detection_2d.png")
    exps = r1.exponents
    config = {"1d": cfg1.to_dict(), "2d": cfg2.to_dict()}
    ctx.write_table(exps, "scale_detection_1d_exponents.csv", config)
    ctx.write_table(r2.summary, "scale_detection_2d_summary.csv", config)
    figures = [
        ReportFigure(
            "scale-1d", "Fig. 7: 1D scale detection, D_k, G_k, R_k against the theory",
            out / "scale_detection_1d.png", exps,
            caption=f"1D CNNs ({cfg1.preset} preset of diffeosense.experiments.scale_detection: "
            f"N = {cfg1.size}, xi = {cfg1.xi}, task {cfg1.task}, strides {cfg1.strides}, "
            f"width {cfg1.width}, P = {cfg1.train_size}, {len(cfg1.seeds)} seeds) at init and "
            "trained, beside the exact idealized pooling net; the table holds the fitted and "
            "predicted exponents per stride, view, state and quantity.",
            files=["scale_detection/scale_detection_1d.svg",
                   "scale_detection/scale_detection_1d.pdf",
                   "scale_detection/scale_detection_1d_exponents.csv", "scale_detection/1d/"]),
        ReportFigure(
            "scale-2d", "Figs. 8, 9: 2D scale detection on deep nets",
            out / "scale_detection_2d.png", r2.summary,
            caption=f"Nets {', '.join(cfg2.models)} ({cfg2.preset} preset of "
            f"diffeosense.experiments.scale_detection_2d: d = {cfg2.size}, xi = {cfg2.xi}, "
            f"P = {cfg2.train_size}, test {cfg2.test_size_value}, {cfg2.epochs} epochs, lr "
            f"{cfg2.lr:g}{''.join(f', {m} {v:g}' for m, v in cfg2.lr_by_model.items())}): "
            "test error against D, G, R at the "
            "output (top) and D_k, G_k, R_k against relative depth (bottom).",
            files=["scale_detection/scale_detection_2d.svg",
                   "scale_detection/scale_detection_2d.pdf",
                   "scale_detection/scale_detection_2d_summary.csv", "scale_detection/2d/"]),
    ]
    claims = [{**c, "figure": "scale-1d"} for c in scale_1d_claims(exps)]
    claims += [{**c, "figure": "scale-2d"}
               for c in scale_2d_claims(r2.summary, r2.sensitivity, cfg2.test_size_value)]
    return FigureOutput(figures, claims)


def scale_1d_claims(exps) -> list[dict[str, Any]]:
    """Fig. 7: after training, D_k falls and G_k rises with depth (fitted slopes' signs), for
    each stride, in the channel-mean view (the authors' measurement) when present."""
    view = "channel-mean" if (exps["view"] == "channel-mean").any() else exps["view"].iloc[0]
    e = exps[(exps["view"] == view)]
    out = []
    for q, sign, word in (("D", -1, "falls"), ("G", +1, "rises")):
        rows = e[e["quantity"] == q]
        tr = rows[rows["state"] == "trained"]
        init = rows[rows["state"] == "init"].set_index("stride")["slope"]
        good = [bool(r.slope * sign > 0) for r in tr.itertuples() if math.isfinite(r.slope)]
        ev = "; ".join(f"stride {r.stride}: trained slope {r.slope:+.3f} "
                       f"(init {init.get(r.stride, math.nan):+.3f}, predicted "
                       f"{r.predicted:+.3f}, law {r.law})" for r in tr.itertuples())
        out.append({"text": f"1D scale detection: after training, {q}_k {word} with depth "
                            f"as spatial pooling predicts ({view} view).",
                    "reproduced": None if not good else all(good), "evidence": ev})
    return out


def scale_2d_claims(summary, sensitivity, n_test: int) -> list[dict[str, Any]]:
    """Figs. 8, 9: across nets, test error vs D, G, R at the output (rho of the logarithms);
    inside each trained net, D at the last activation below the first, G above.

    A test error of 0 has no logarithm: it is counted as half an error among the ``n_test``
    test images, ``0.5 / n_test`` (below the resolution ``1 / n_test`` of the measurement),
    and the evidence says so.
    """
    from .noisy_training import log_correlation

    out = []
    floor = 0.5 / n_test
    err = summary["test_error"].clip(lower=floor)
    for q, sign in (("D", +1), ("G", -1), ("R", +1)):
        rho = log_correlation(err, summary[q]) if len(summary) >= 3 else math.nan
        out.append({"text": f"2D scale detection: across nets, test error is "
                            f"{'positively' if sign > 0 else 'negatively'} correlated with {q} "
                            f"at the output.",
                    "reproduced": None if math.isnan(rho) else bool(rho * sign > 0),
                    "evidence": f"rho(eps, {q}) = {rho:+.2f} over {len(summary)} nets x seeds"
                    + (f"; errors of 0 counted as 0.5/{n_test} = {floor:.2g}"
                       if (summary["test_error"] == 0).any() else "")})
    act = sensitivity[(sensitivity["state"] == "trained")
                      & (sensitivity["kind"] == "activation")]
    flags, ev = [], []
    for (m, seed), g in act.groupby(["model", "seed"], sort=False):
        g = g.sort_values("depth")
        first, last = g.iloc[0], g.iloc[-1]
        ok = bool(last.D < first.D and last.G > first.G)
        flags.append(ok)
        ev.append(f"{m} (seed {seed}): D {first.D:.3g} -> {last.D:.3g}, "
                  f"G {first.G:.3g} -> {last.G:.3g}")
    out.append({"text": "2D scale detection: inside each trained net, D_k falls and G_k rises "
                        "from the first to the last activation.",
                "reproduced": None if not flags else sum(flags) > len(flags) / 2,
                "evidence": "; ".join(ev)})
    errs = summary.groupby("model", sort=False)["test_error"].mean()
    out.append({"text": "Every 2D net learns (a check of this run, not a claim of the paper): "
                        "test error below 40 % (chance: 50 %).",
                "reproduced": bool((errs < 0.4).all()),
                "evidence": ", ".join(f"{m} {e:.1%}" for m, e in errs.items())})
    return out


register_figure(Figure(
    "scale-detection", number=7, presets=PRESETS, run=run,
    summary="Figs. 7-9: scale detection, 1D CNNs vs the theory and deep nets in 2D"))
