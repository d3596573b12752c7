"""``diffeosense reproduce NAME --scale quick|paper``: the paper's figures, and a report.

The loop and the report, nothing else: each figure is a module of
:mod:`diffeosense.experiments.figures` (the protocol: :mod:`diffeosense.experiments.figure`)
that holds its presets, runs its units through the sweep engine (so it resumes after a kill
and skips what is finished), draws its figures (PNG and SVG), writes its tables (CSV) and
returns the paper's claims with this run's verdicts, computed from the tables.
:func:`reproduce` runs the asked figures one after the other, each on its preset for the scale,
and writes one self-contained HTML report (:func:`diffeosense.report.write_report`) with every
figure, table, claim, the presets, the versions, the command and the time each figure took.

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
import time
from pathlib import Path

from .._io import to_jsonable, write_json
from .figure import FigureContext, ReproduceOptions, get_figure, list_figures

__all__ = ["ReproduceOptions", "reproduce", "scales"]


def scales() -> tuple[str, ...]:
    """Every scale some figure has a preset for, in order of first appearance."""
    return tuple(dict.fromkeys(s for n in list_figures() for s in get_figure(n).scales))


def reproduce(names: list[str], scale: str, out: str | Path, command: str,
              opts: ReproduceOptions | None = None) -> Path:
    """Run the figures ``names`` (registered names, :func:`~.figure.list_figures`, or
    ``["all"]``) on their ``scale`` presets into ``out`` and write ``out/report.html``;
    returns the report's path."""
    from ..provenance import provenance
    from ..report import Claim, write_report

    opts = opts or ReproduceOptions()
    known = scales()
    if scale not in known:
        raise ValueError(f"scale must be one of {known}, got {scale!r}")
    if names == ["all"]:
        names = list_figures()
    figures = [get_figure(n) for n in names]  # unknown names: ValueError listing the known
    if not figures:
        raise ValueError(f"name at least one figure: {', '.join(list_figures())}, all")
    presets = {f.name: f.preset(scale) for f in figures}  # before any work: a missing preset
    out = Path(out)
    # Taken before any work: the commit and versions of the code that runs (a checkout that
    # moves on during a long run must not be credited with its results).
    prov = provenance()
    outputs, times, configs = [], {}, {}
    for fig in figures:
        t0 = time.perf_counter()
        if opts.progress:
            print(f"reproduce {fig.name} --scale {scale}", flush=True)
        cfg = presets[fig.name]
        ctx = FigureContext(fig.name, scale, out / fig.folder, out / "runs", opts)
        outputs.append((fig.name, fig.run(cfg, ctx)))
        times[fig.name] = round(time.perf_counter() - t0, 1)
        configs[fig.name] = cfg.to_dict() if hasattr(cfg, "to_dict") else to_jsonable(cfg)
    config = {"scale": scale, "figures": configs,
              "options": to_jsonable(opts), "seconds": times}
    write_json(out / "reproduce.json", {"command": command, **config, "provenance": prov})
    notes = [f"Scale {scale}. Time per figure in this invocation (runs finished by an earlier "
             f"invocation are reused, not recomputed, and take no time here): "
             + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + "."]
    notes += [f"{name}: {fo.failed_runs} run(s) failed (error.txt in their folders)."
              for name, fo in outputs if fo.failed_runs]
    claims = [Claim(c["text"], c["verdict"], c["evidence"], c.get("figure"), c.get("estimate"))
              for _, fo in outputs for c in fo.claims]
    report_figures = [f for _, fo in outputs for f in fo.figures]
    title = f"diffeosense reproduce {' '.join(names)} --scale {scale}"
    return write_report(out / "report.html", title, report_figures, claims, config,
                        json.loads(json.dumps(to_jsonable(prov), default=str)), command, notes)
