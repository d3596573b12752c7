"""``diffeosense reproduce NAME --scale quick|paper``: the paper's figures, and a report.

The loop and the report, nothing else: each figure is a module of
:mod:`diffeosense.experiments.figures` (the protocol: :mod:`diffeosense.experiments.figure`)
that holds its presets, runs its units through the sweep engine (so it resumes after a kill
and skips what is finished), draws its figures (PNG and SVG), writes its tables (CSV) and
returns the paper's claims with this run's verdicts, computed from the tables.
:func:`reproduce` runs the asked figures one after the other, each on its preset for the scale,
and writes one self-contained HTML report (:func:`diffeosense.report.write_report`) with every
figure, table, claim, the presets, the versions, the command and the time each figure took
when its units ran (a later pass that reuses every finished run says so, and shows the first
run's time from ``reproduce.json``).

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
from typing import Any

from .._io import to_jsonable, write_json
from .figure import FigureContext, ReproduceOptions, get_figure, list_figures

__all__ = ["ReproduceOptions", "reproduce", "plan", "recorded_claims", "scales", "report_title",
           "first_run_seconds", "time_note"]


def scales() -> tuple[str, ...]:
    """Every scale some figure has a preset for, in order of first appearance."""
    return tuple(dict.fromkeys(s for n in list_figures() for s in get_figure(n).scales))


def reproduce(names: list[str], scale: str, out: str | Path, command: str,
              opts: ReproduceOptions | None = None, compare: str | Path | None = None) -> Path:
    """Run the figures ``names`` (registered names, :func:`~.figure.list_figures`, or
    ``["all"]``) on their ``scale`` presets into ``out`` and write ``out/report.html``;
    returns the report's path. ``compare``: the folder of another reproduction (another
    scale, say) whose claims the report shows beside this run's (:func:`recorded_claims`)."""
    from ..provenance import provenance
    from ..report import Claim, write_report

    opts = opts or ReproduceOptions()
    other = _compared(compare) if compare is not None else None  # checked before any work
    known = scales()
    if scale not in known:
        raise ValueError(f"scale must be one of {known}, got {scale!r}")
    names, skipped = _figure_names(names, scale)
    figures = [get_figure(n) for n in names]  # unknown names: ValueError listing the known
    if not figures:
        raise ValueError(f"name at least one figure: {', '.join(list_figures())}, all")
    presets = {f.name: f.preset(scale) for f in figures}  # before any work: a missing preset
    if opts.train:
        from ..train import TRAIN_LATER_DEFAULTS as fast

        if not set(opts.train) <= set(fast):
            raise ValueError(f"ReproduceOptions.train takes the fast-path fields {sorted(fast)} "
                             f"only, got {sorted(opts.train)}")
        own_way = [f.name for f in figures if f.units is None]
        if own_way:
            raise ValueError(f"the fast training path ({', '.join(sorted(opts.train))}) applies "
                             f"to the figures whose units are training runs; "
                             f"{', '.join(own_way)} trains its own way: run it without these "
                             f"options")
    out = Path(out)
    # Taken before any work: the commit and versions of the code that runs (a checkout that
    # moves on during a long run must not be credited with its results).
    prov = provenance()
    outputs, times, configs, fresh = [], {}, {}, {}
    for fig in figures:
        t0 = time.time()
        if opts.progress:
            print(f"reproduce {fig.name} --scale {scale}", flush=True)
        cfg = presets[fig.name]
        ctx = FigureContext(fig.name, scale, out / fig.folder, out / "runs", opts)
        outputs.append((fig.name, fig.run(cfg, ctx)))
        times[fig.name] = round(time.time() - t0, 1)
        configs[fig.name] = cfg.to_dict() if hasattr(cfg, "to_dict") else to_jsonable(cfg)
        fresh[fig.name] = _units_finished_since(out, t0)
    first = first_run_seconds(out, configs, times, fresh)
    config = {"scale": scale, "figures": configs,
              "options": to_jsonable(opts), "seconds": times}
    claims = [Claim(c["text"], c["verdict"], c["evidence"], c.get("figure"), c.get("estimate"))
              for _, fo in outputs for c in fo.claims]
    write_json(out / "reproduce.json", {"command": command, **config,
                                        "first_run_seconds": first, "units_run": fresh,
                                        "claims": [to_jsonable(c) for c in claims],
                                        "provenance": prov})
    notes = [f"Scale {scale}. " + time_note(times, first, fresh)]
    if skipped:
        notes.append(f"Not at this scale (no {scale} preset): {', '.join(skipped)}.")
    notes += [f"{name}: {fo.failed_runs} run(s) failed (error.txt in their folders)."
              for name, fo in outputs if fo.failed_runs]
    report_figures = [f for _, fo in outputs for f in fo.figures]
    return write_report(out / "report.html", report_title(figures, scale), report_figures,
                        claims, config, json.loads(json.dumps(to_jsonable(prov), default=str)),
                        command, notes, other)


def _figure_names(names: list[str], scale: str) -> tuple[list[str], list[str]]:
    """``(names, skipped)``: ``["all"]`` is every figure with a preset at ``scale`` (the
    others are ``skipped``); other names as given."""
    if names != ["all"]:
        return names, []
    have = [n for n in list_figures() if scale in get_figure(n).presets]
    return have, [n for n in list_figures() if n not in have]


def recorded_claims(folder: str | Path) -> tuple[str, list]:
    """``(scale, claims)`` of the reproduction in ``folder``, from its ``reproduce.json``
    (:class:`~diffeosense.report.Claim` objects); ``ValueError`` saying what to do when the
    folder holds none."""
    from ..report import Claim

    path = Path(folder) / "reproduce.json"
    if not path.is_file():
        raise ValueError(f"--compare {folder}: no reproduce.json there; give the --out folder "
                         f"of an earlier 'diffeosense reproduce' run")
    rec = json.loads(path.read_text())
    if "claims" not in rec:
        again = rec.get("command", "diffeosense reproduce ...")
        raise ValueError(f"--compare {folder}: its reproduce.json records no claims (written "
                         f"by an earlier version); run its command again there ({again}): "
                         f"finished runs are not repeated, only the tables, figures and report "
                         f"are made again")
    return rec.get("scale", "?"), [Claim(**c) for c in rec["claims"]]


def _compared(folder: str | Path) -> tuple[str, list]:
    scale, claims = recorded_claims(folder)
    return f"{scale} ({Path(folder).name})", claims


def plan(names: list[str], scale: str, out: str | Path,
         opts: ReproduceOptions | None = None) -> list[dict[str, Any]]:
    """What ``reproduce --dry-run`` lists, running nothing: per figure (``names`` as for
    :func:`reproduce`) the training runs of its ``scale`` preset, each once (figures share
    runs), with the sweep's status of its folder under ``out/runs``
    (:func:`~diffeosense.experiments.sweep.plan`): ``{"figure", "shared_with", **row}``; a
    figure whose units are not runs gives one row with ``hash`` None; ``model`` is the net's
    display name (its options included)."""
    from ..models.names import display_name
    from .sweep import plan as sweep_plan

    opts = opts or ReproduceOptions()
    if scale not in scales():
        raise ValueError(f"scale must be one of {scales()}, got {scale!r}")
    names, _ = _figure_names(names, scale)
    rows, seen = [], {}
    for fig in (get_figure(n) for n in names):
        cfg = fig.preset(scale)
        if fig.units is None:
            rows.append({"figure": fig.name, "hash": None, "status": "not listed",
                         "shared_with": None})
            continue
        units = fig.units(cfg, opts)
        for rc, r in zip(units, sweep_plan(units, Path(out) / "runs"), strict=True):
            if r["hash"] in seen:
                seen[r["hash"]]["shared_with"].append(fig.name)
                continue
            row = {"figure": fig.name, "shared_with": [], **r,
                   "model": display_name(rc.train.model, rc.train.model_kwargs)}
            seen[r["hash"]] = row
            rows.append(row)
    return rows


def report_title(figures, scale: str) -> str:
    """The report's one title (not a command: the command is given once, under "Made by").

    >>> from diffeosense.experiments.figure import get_figure
    >>> report_title([get_figure("noisy-training"), get_figure("scale-detection")], "quick")
    "The paper's figures reproduced at the quick scale: noisy-training (Fig. 1), scale-detection (Fig. 7)"
    """
    names = ", ".join(f"{f.name} (Fig. {f.number:g})" for f in figures)
    return f"The paper's figures reproduced at the {scale} scale: {names}"


def _units_finished_since(out: Path, t0: float) -> int:
    """Run units whose ``done`` marker was written at or after ``t0`` under ``out`` (0: the
    pass reused every finished run)."""
    n = 0
    for p in Path(out).rglob("done"):
        try:
            n += p.is_file() and p.stat().st_mtime >= t0 - 1.0
        except OSError:
            continue
    return n


def first_run_seconds(out: Path, configs: dict, times: dict, fresh: dict) -> dict:
    """Per figure, the time of the pass that ran its units: this pass's when it ran some,
    else the one recorded by an earlier pass with the same preset (``reproduce.json``, or the
    ``reproduce_first_run.json`` kept beside it), else None (not recorded)."""
    earlier: dict = {}
    for name in ("reproduce_first_run.json", "reproduce.json"):
        p = Path(out) / name
        if not p.is_file():
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        same = {f for f, c in (rec.get("figures") or {}).items()
                if json.loads(json.dumps(to_jsonable(configs.get(f)), default=str)) == c}
        first = rec.get("first_run_seconds") or {}
        for f in same:
            # A record that tells which passes ran units, or the first-run file by its name.
            t = first.get(f) if "first_run_seconds" in rec else (
                rec.get("seconds", {}).get(f) if name == "reproduce_first_run.json" else None)
            if t is not None:
                earlier.setdefault(f, t)
    return {f: (times[f] if fresh.get(f) else earlier.get(f)) for f in times}


def time_note(times: dict, first: dict, fresh: dict) -> str:
    """The report's line on times: each figure's first-run time, and what this pass did.

    >>> time_note({"a": 2.0, "b": 30.0}, {"a": 181.0, "b": 30.0}, {"a": 0, "b": 3})
    'Time per figure, first run (the pass that trained and measured its units): a 181 s (this pass reused every finished run and took 2 s), b 30 s (this pass ran 3 units).'
    """
    parts = []
    for f, t in times.items():
        if fresh.get(f):
            parts.append(f"{f} {t:.0f} s (this pass ran {fresh[f]} units)")
        elif first.get(f) is not None:
            parts.append(f"{f} {first[f]:.0f} s (this pass reused every finished run and took "
                         f"{t:.0f} s)")
        else:
            parts.append(f"{f}: not recorded (this pass reused every finished run and took "
                         f"{t:.0f} s)")
    return ("Time per figure, first run (the pass that trained and measured its units): "
            + ", ".join(parts) + ".")
