"""``diffeosense reproduce NAME --scale quick|paper``: the paper's figures, and a report.

Each registered figure (:data:`FIGURES`) runs its grid through the sweep engine
(:func:`~diffeosense.experiments.sweep.run_sweep`, so it resumes after a kill and skips what is
finished), draws its figures (PNG and SVG), writes its tables (CSV) and returns the paper's
claims with this run's verdicts, computed from the tables. :func:`reproduce` runs the asked
figures one after the other and writes one self-contained HTML report
(:func:`diffeosense.report.write_report`) with every figure, table, claim, the presets, the
versions, the command and the time each figure took.

Layout of ``out``::

    report.html                       the report (self-contained)
    reproduce.json                    the command, the presets, times, provenance
    runs/<hash>/                      the sweep's run folders (diffeosense.experiments.run),
                                      shared by the figures: a net trained for one figure
                                      with the same config is not trained again for another
    <figure>/*.png, *.svg, *.csv      figures and their tables; each table's sidecar
    <figure>/*.meta.json              (figure, scale, preset, provenance, rows, SHA-256) lets
                                      diffeosense._io.read_table refuse it once edited
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import to_jsonable, write_json

__all__ = ["ReproduceOptions", "FigureOutput", "FIGURES", "SCALES", "reproduce"]

SCALES = ("quick", "paper")
_TABLE_FORMAT = "diffeosense.reproduce-table/1"


@dataclass
class ReproduceOptions:
    """Where and how the runs execute (not what they compute)."""

    backend: str = "local"
    workers: int | None = None
    device: str = "cpu"
    data_root: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass
class FigureOutput:
    """What one figure's runner returns: report figures, claims, its preset and its time."""

    name: str
    figures: list  # list[diffeosense.report.ReportFigure]
    claims: list[dict[str, Any]]
    config: dict[str, Any]
    seconds: float = 0.0
    failed_runs: int = 0


def _sweep(configs, root: Path, opts: ReproduceOptions) -> int:
    from .sweep import run_sweep

    def say(o: dict) -> None:
        if opts.progress:
            print(f"  run {o['hash']}: {o['status']} ({o['seconds']:.0f} s)"
                  + (f" {o['error']}" if o.get("error") else ""), flush=True)

    report = run_sweep(configs, root, opts.backend, workers=opts.workers, on_result=say,
                       **opts.backend_options)
    return len(report.failed)


def noisy_training(scale: str, out: Path, runs: Path, opts: ReproduceOptions) -> FigureOutput:
    """Fig. 1: test error against D, G, R at the output of nets trained with noise, and
    rho(eps, X) against the noise level (:mod:`diffeosense.experiments.noisy_training`)."""
    from ..plots.reproduce import plot_noisy_correlations, plot_noisy_scatter, save_png_svg
    from ..report import ReportFigure
    from . import noisy_training as nt

    cfg = nt.PRESETS[scale]
    configs = nt.run_configs(cfg, device=opts.device, data_root=opts.data_root)
    failed = _sweep(configs, runs, opts)
    done = [c for c in configs if (runs / c.hash() / "done").is_file()]
    if len(done) < 3:
        raise ValueError(f"noisy-training: only {len(done)} of {len(configs)} runs finished "
                         f"(see error.txt in {runs}); re-run the same command to resume")
    results = nt.results_table(cfg, done, runs)
    corr = nt.correlation_table(results)
    _write_csv(results, out / "noisy_training_runs.csv", "noisy-training", scale, cfg.to_dict())
    _write_csv(corr, out / "noisy_training_correlations.csv", "noisy-training", scale,
               cfg.to_dict())
    title = f"{cfg.dataset}, {len(cfg.nets)} nets x {len(cfg.noises)} noise levels ({scale})"
    save_png_svg(plot_noisy_scatter(results, title), out / "noisy_training_scatter")
    save_png_svg(plot_noisy_correlations(corr, title), out / "noisy_training_correlations")
    figures = [
        ReportFigure(
            "noisy-scatter", "Fig. 1 (scatter): test error against D, G, R at the output",
            out / "noisy_training_scatter.png", results,
            caption="One point per net (marker) and training noise s (colour); D, G, R measured "
            "at the output on probes corrupted with the training noise; test error on the "
            "noisy test set, of the measured (best) checkpoint.",
            files=["noisy_training/noisy_training_scatter.svg",
                   "noisy_training/noisy_training_runs.csv"]),
        ReportFigure(
            "noisy-correlations", "Fig. 1 (right): rho(eps, X) against the training noise",
            out / "noisy_training_correlations.png", corr,
            caption="rho(eps, X) = Cov(log eps, log X) / sqrt(Var log eps Var log X) across the "
            "nets at each training noise level, for X = D, G, R.",
            files=["noisy_training/noisy_training_correlations.svg",
                   "noisy_training/noisy_training_correlations.csv"]),
    ]
    cl = nt.claims(results, corr)
    for c in cl:
        c["figure"] = "noisy-correlations"
    cl[-1]["figure"] = "noisy-scatter"
    return FigureOutput("noisy-training", figures, cl, cfg.to_dict(), failed_runs=failed)


def _trained(name: str, configs, runs: Path, opts: ReproduceOptions) -> int:
    failed = _sweep(configs, runs, opts)
    missing = [c.train.model for c in configs if not (runs / c.hash() / "done").is_file()]
    if missing:
        raise ValueError(f"{name}: the training runs of {missing} did not finish (see error.txt "
                         f"in {runs}); re-run the same command to resume")
    return failed


def layerwise(scale: str, out: Path, runs: Path, opts: ReproduceOptions) -> FigureOutput:
    """Fig. 3: D_k, G_k, R_k at init and trained, original vs channel-shuffled
    (:mod:`diffeosense.experiments.pooling_figures`, on :func:`diffeosense.pooling_report`)."""
    from ..plots.reproduce import plot_layerwise, save_png_svg
    from ..report import ReportFigure
    from . import pooling_figures as pf

    cfg = pf.PRESETS[scale]
    configs = pf.run_configs(cfg, device=opts.device, data_root=opts.data_root)
    failed = _trained("layerwise", configs, runs, opts)
    table = pf.layerwise_tables(cfg, configs, runs, out, device=opts.device)
    _write_csv(table, out / "layerwise.csv", "layerwise", scale, cfg.to_dict())
    title = f"{cfg.training.dataset}, clean training ({scale})"
    save_png_svg(plot_layerwise(table, title), out / "layerwise")
    fig = ReportFigure(
        "layerwise", "Fig. 3: D_k, G_k, R_k layer by layer, original vs channel-shuffled",
        out / "layerwise.png", table,
        caption=f"Every layer k of each net, at initialization (grey) and trained (blue); "
        f"dashed: the geometric mean over {cfg.n_shuffles} copies whose convolutions have their "
        f"input channels permuted (one permutation per layer). {cfg.n_probes} clean test probes; "
        f"BatchNorm at init: {cfg.init_batchnorm} statistics, trained: running statistics. "
        "channel_fraction: the share of the log-stability up to layer k that shuffling "
        "destroys (channel pooling); the rest is spatial pooling.",
        files=["layerwise/layerwise.svg", "layerwise/layerwise.csv",
               "layerwise/<net>/<stage>-<hash>_{pooling,sensitivity,spectra}.csv"])
    cl = [{**c, "figure": "layerwise"} for c in pf.layerwise_claims(table)]
    return FigureOutput("layerwise", [fig], cl, cfg.to_dict(), failed_runs=failed)


def filter_spectra(scale: str, out: Path, runs: Path, opts: ReproduceOptions) -> FigureOutput:
    """Fig. 4: Laplacian spectra of the conv filters at init and trained
    (:func:`diffeosense.pooling.filter_spectra`)."""
    from ..plots.reproduce import plot_spectra, save_png_svg
    from ..report import ReportFigure
    from . import pooling_figures as pf

    cfg = pf.PRESETS[scale]
    configs = pf.run_configs(cfg, device=opts.device, data_root=opts.data_root)
    failed = _trained("filter-spectra", configs, runs, opts)
    full, homo = pf.spectra_tables(configs, runs)
    _write_csv(full, out / "filter_spectra.csv", "filter-spectra", scale, cfg.to_dict())
    _write_csv(homo, out / "filter_spectra_homogeneous.csv", "filter-spectra", scale,
               cfg.to_dict())
    title = f"{cfg.training.dataset}, clean training ({scale})"
    save_png_svg(plot_spectra(homo, title), out / "filter_spectra")
    fig = ReportFigure(
        "filter-spectra", "Fig. 4: filter spectra, homogeneous share at init and trained",
        out / "filter_spectra.png", homo,
        caption="For every conv layer, the share of the filters' power on the eigenvalue-0 "
        "(homogeneous) eigenvector of the kernel grid's Laplacian, at initialization and "
        "trained; dotted: a white filter (1/K). The full spectra (every eigenvalue) are in "
        "filter_spectra.csv.",
        files=["filter_spectra/filter_spectra.svg", "filter_spectra/filter_spectra.csv"])
    cl = [{**c, "figure": "filter-spectra"} for c in pf.spectra_claims(homo)]
    return FigureOutput("filter-spectra", [fig], cl, cfg.to_dict(), failed_runs=failed)


# The scale-detection experiments' own presets: (1D preset, overrides), (2D preset, overrides).
SCALE_DETECTION = {
    "quick": {"1d": ("small", {}), "2d": ("quick", {})},
    "paper": {"1d": ("paper", {}), "2d": ("paper", {})},
}


def scale_detection(scale: str, out: Path, runs: Path, opts: ReproduceOptions) -> FigureOutput:
    """Figs. 7 (1D CNNs vs the theory of spatial pooling) and 8-9 (2D task, deep nets), from
    :mod:`diffeosense.experiments.scale_detection` and ``scale_detection_2d`` (their presets,
    their run folders under ``out``; finished units are reused)."""
    from ..plots import scale_detection as p1
    from ..plots import scale_detection_2d as p2
    from ..report import ReportFigure
    from . import scale_detection as sd1
    from . import scale_detection_2d as sd2

    (n1, o1), (n2, o2) = SCALE_DETECTION[scale]["1d"], SCALE_DETECTION[scale]["2d"]
    cfg1 = sd1.preset(n1, **{"device": opts.device, **o1})
    cfg2 = sd2.preset(n2, **{"device": opts.device, **o2})
    r1 = sd1.run(cfg1, out / "1d", progress=opts.progress)
    r2 = sd2.run(cfg2, out / "2d", progress=opts.progress, backend=opts.backend,
                 workers=opts.workers, **opts.backend_options)
    for ext in ("png", "svg"):
        p1.save_result_figure(r1, out / f"scale_detection_1d.{ext}")
        p2.save_result_figure(r2, out / f"scale_detection_2d.{ext}")
    exps = r1.exponents
    config = {"1d": cfg1.to_dict(), "2d": cfg2.to_dict()}
    _write_csv(exps, out / "scale_detection_1d_exponents.csv", "scale-detection", scale, config)
    _write_csv(r2.summary, out / "scale_detection_2d_summary.csv", "scale-detection", scale,
               config)
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
                   "scale_detection/scale_detection_2d_summary.csv", "scale_detection/2d/"]),
    ]
    claims = [{**c, "figure": "scale-1d"} for c in _scale_1d_claims(exps)]
    claims += [{**c, "figure": "scale-2d"}
               for c in _scale_2d_claims(r2.summary, r2.sensitivity, cfg2.test_size_value)]
    return FigureOutput("scale-detection", figures, claims, config)


def _scale_1d_claims(exps) -> list[dict[str, Any]]:
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


def _scale_2d_claims(summary, sensitivity, n_test: int) -> list[dict[str, Any]]:
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


def _write_csv(df, path: Path, figure: str, scale: str, config: dict[str, Any]) -> Path:
    """A figure's table, with its checked sidecar ``<stem>.meta.json`` (which figure, the
    scale, the figure's preset, provenance, and the table's row count and hash): read it
    with :func:`diffeosense._io.read_table`, which refuses it once truncated or edited."""
    from .._io import write_table
    from ..provenance import provenance

    return write_table(path, df, {"format": _TABLE_FORMAT, "figure": figure,
                                  "scale": scale, "config": config, "provenance": provenance()})


# Every registered figure runs; a figure whose engine is not in the library is not registered.
FIGURES: dict[str, Callable[[str, Path, Path, ReproduceOptions], FigureOutput]] = {
    "noisy-training": noisy_training,
    "layerwise": layerwise,
    "filter-spectra": filter_spectra,
    "scale-detection": scale_detection,
}


def reproduce(names: list[str], scale: str, out: str | Path, command: str,
              opts: ReproduceOptions | None = None) -> Path:
    """Run the figures ``names`` (keys of :data:`FIGURES`, or ``["all"]``) at ``scale`` into
    ``out`` and write ``out/report.html``; returns the report's path."""
    from ..provenance import provenance
    from ..report import Claim, write_report

    opts = opts or ReproduceOptions()
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if names == ["all"]:
        names = list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise ValueError(f"unknown figure(s) {unknown}; available: {', '.join(FIGURES)}, all")
    out = Path(out)
    # Taken before any work: the commit and versions of the code that runs (a checkout that
    # moves on during a long run must not be credited with its results).
    prov = provenance()
    outputs: list[FigureOutput] = []
    for name in names:
        t0 = time.perf_counter()
        if opts.progress:
            print(f"reproduce {name} --scale {scale}", flush=True)
        fo = FIGURES[name](scale, out / name.replace("-", "_"), out / "runs", opts)
        fo.seconds = time.perf_counter() - t0
        outputs.append(fo)
    times = {fo.name: round(fo.seconds, 1) for fo in outputs}
    config = {"scale": scale, "figures": {fo.name: fo.config for fo in outputs},
              "options": to_jsonable(opts), "seconds": times}
    write_json(out / "reproduce.json", {"command": command, **config, "provenance": prov})
    notes = [f"Scale {scale}. Time per figure in this invocation (runs finished by an earlier "
             f"invocation are reused, not recomputed, and take no time here): "
             + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + "."]
    notes += [f"{fo.name}: {fo.failed_runs} run(s) failed (error.txt in their folders)."
              for fo in outputs if fo.failed_runs]
    claims = [Claim(c["text"], c["reproduced"], c["evidence"], c.get("figure"))
              for fo in outputs for c in fo.claims]
    figures = [f for fo in outputs for f in fo.figures]
    title = f"diffeosense reproduce {' '.join(names)} --scale {scale}"
    return write_report(out / "report.html", title, figures, claims, config,
                        json.loads(json.dumps(to_jsonable(prov), default=str)), command, notes)
