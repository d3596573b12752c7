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


def _slope_estimate(r):
    """The interval of a trained slope: the mean of the per-seed slopes +- t SE over seeds
    (``seed_se``, n_seeds - 1 dof); one seed: the fit's residual stderr (points - 2 dof)."""
    from ..verdicts import t_interval

    n = int(getattr(r, "n_seeds", 1) or 1)
    if n >= 2 and math.isfinite(getattr(r, "seed_se", math.nan)):
        return t_interval(r.seed_mean, r.seed_se, n - 1)
    return t_interval(r.slope, r.stderr, int(r.k_max - r.k_min + 1) - 2)


def scale_1d_claims(exps) -> list[dict[str, Any]]:
    """Fig. 7: after training, D_k falls and G_k rises with depth, for each stride, in the
    channel-mean view (the authors' measurement) when present: each stride's trained slope
    with its interval over seeds, shown when every stride's interval excludes zero on the
    predicted side (the evidence says whether the predicted slope lies in it)."""
    from ..verdicts import all_of, judge

    view = "channel-mean" if (exps["view"] == "channel-mean").any() else exps["view"].iloc[0]
    e = exps[(exps["view"] == view)]
    out = []
    for q, sign, word in (("D", -1, "falls"), ("G", +1, "rises")):
        rows = e[e["quantity"] == q]
        tr = rows[rows["state"] == "trained"]
        init = rows[rows["state"] == "init"].set_index("stride")["slope"]
        parts, ev = [], []
        for r in tr.itertuples():
            est = _slope_estimate(r)
            parts.append(judge(est, sign))
            inside = est.finite and est.lo <= r.predicted <= est.hi
            ev.append(f"stride {r.stride}: trained slope {est.text('+.3f')} ({est.method}; "
                      f"init {init.get(r.stride, math.nan):+.3f}, predicted {r.predicted:+.3f}"
                      f"{' (inside)' if inside else ' (outside)'}, law {r.law})")
        out.append({"text": f"1D scale detection: after training, {q}_k {word} with depth "
                            f"as spatial pooling predicts ({view} view).",
                    "verdict": all_of(parts) if parts else None,
                    "estimate": "; ".join(x.split(" (")[0] for x in ev) or None,
                    "evidence": "; ".join(ev)})
    return out


def scale_2d_claims(summary, sensitivity, n_test: int) -> list[dict[str, Any]]:
    """Figs. 8, 9: across nets, test error vs D, G, R at the output (rho of the logarithms,
    with a bootstrap interval over the nets x seeds); inside each trained net, D at the last
    activation below the first, G above (mean log10 ratios over nets x seeds, with theirs).

    A test error of 0 has no logarithm: it is counted as half an error among the ``n_test``
    test images, ``0.5 / n_test`` (below the resolution ``1 / n_test`` of the measurement),
    and the evidence says so.
    """
    from ..verdicts import NOT_SHOWN, SHOWN, all_of, bootstrap, judge, mean_over
    from .noisy_training import log_correlation

    out = []
    floor = 0.5 / n_test
    err = summary["test_error"].clip(lower=floor).to_numpy(dtype=float)
    for q, sign in (("D", +1), ("G", -1), ("R", +1)):
        x = summary[q].to_numpy(dtype=float)

        def stat(idx, x=x):
            return log_correlation(err[idx], x[idx]) if len(set(idx.tolist())) >= 3 \
                else math.nan

        est = bootstrap(len(summary), stat, what="nets x seeds") if len(summary) >= 3 else \
            None
        rho = math.nan if est is None else est.value
        out.append({"text": f"2D scale detection: across nets, test error is "
                            f"{'positively' if sign > 0 else 'negatively'} correlated with {q} "
                            f"at the output.",
                    "verdict": None if est is None else judge(est, sign),
                    "estimate": None if est is None else est.text(),
                    "evidence": f"rho(eps, {q}) = {rho:+.2f}"
                    + ("" if est is None else f" {est.text()} ({est.method})")
                    + f" over {len(summary)} nets x seeds"
                    + (f"; errors of 0 counted as 0.5/{n_test} = {floor:.2g}"
                       if (summary["test_error"] == 0).any() else "")})
    act = sensitivity[(sensitivity["state"] == "trained")
                      & (sensitivity["kind"] == "activation")]
    d_drop, g_rise, ev = [], [], []
    for (m, seed), g in act.groupby(["model", "seed"], sort=False):
        g = g.sort_values("depth")
        first, last = g.iloc[0], g.iloc[-1]
        d_drop.append(math.log10(first.D / last.D))
        g_rise.append(math.log10(last.G / first.G))
        ev.append(f"{m} (seed {seed}): D {first.D:.3g} -> {last.D:.3g}, "
                  f"G {first.G:.3g} -> {last.G:.3g}")
    ed, eg = mean_over(d_drop, what="nets x seeds"), mean_over(g_rise, what="nets x seeds")
    out.append({"text": "2D scale detection: inside each trained net, D_k falls and G_k rises "
                        "from the first to the last activation.",
                "verdict": all_of([judge(ed, +1), judge(eg, +1)]) if ev else None,
                "estimate": f"D {ed.text()}, G {eg.text()}" if ev else None,
                "evidence": "; ".join(ev) + f"; mean log10 fall of D {ed.text()}, rise of G "
                f"{eg.text()} ({ed.method})"})
    errs = summary.groupby("model", sort=False)["test_error"].mean()
    out.append({"text": "Every 2D net learns (a check of this run, not a claim of the paper): "
                        "test error below 40 % (chance: 50 %).",
                "verdict": SHOWN if bool((errs < 0.4).all()) else NOT_SHOWN, "estimate": None,
                "evidence": ", ".join(f"{m} {e:.1%}" for m, e in errs.items())})
    return out


register_figure(Figure(
    "scale-detection", number=7, presets=PRESETS, run=run,
    summary="Figs. 7-9: scale detection, 1D CNNs vs the theory and deep nets in 2D"))
