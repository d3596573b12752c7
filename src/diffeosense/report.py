"""A self-contained HTML report of an experiment: figures, their tables, claims and provenance.

The report is one ``.html`` file that opens anywhere, offline: every figure is embedded as a
``data:`` PNG, every table is written out in the page *and* offered as a ``data:`` CSV, and a
Content-Security-Policy forbids the browser any fetch (``default-src 'none'``), so the file
cannot depend on the network by accident. Each figure links to its table (``#table-<id>``) and
each table back to its figure; a number with an interval beside it in its table (``X_se``, or
``X_lo`` and ``X_hi``) is shown with it in one cell. The title is given once, the command that
made the page once (under "Made by"). The page also holds the paper's claims with, for each, whether
this run reproduces it and the number that says so, the resolved config, the versions
(:func:`diffeosense.provenance.provenance`) and the command that made it.

The markup is well-formed XML as well as HTML5 (every element closed, attributes quoted), so
it can be checked with a strict parser. This module sits at the edge: the core never imports it.

>>> import pandas as pd, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> png = d / "f.png"; _ = png.write_bytes(bytes.fromhex("89504e470d0a1a0a"))
>>> fig = ReportFigure("f", "A figure", png, pd.DataFrame({"a": [1.0]}), caption="a = 1")
>>> claim = Claim("a is one", "shown", "a = 1.0", estimate="1.0 [0.9, 1.1]")
>>> page = write_report(d / "r.html", "Demo", [fig], [claim], {"x": 1}, {"torch": "2"}, "cmd")
>>> 'href="#table-f"' in page.read_text()
True
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _io

__all__ = ["ReportFigure", "Claim", "write_report", "render_report", "interval_columns"]

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
pre { background: #f5f5f5; padding: .6em; overflow-x: auto; font-size: .85em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.yes { color: #186a1d; font-weight: bold; } .no { color: #a11; font-weight: bold; }
.na { color: #777; font-weight: bold; }
"""

# Counts the figures that decoded (naturalWidth > 0) once the page has loaded, for a headless
# browser check: the count lands in <body data-figures-loaded="k/n"> and on the console.
# (No '&' or '<' in it: the page must stay well-formed XML too.)
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("figure img");
  var ok = 0;
  Array.prototype.forEach.call(imgs, function (img) {
    if (img.complete) { if (img.naturalWidth > 0) { ok += 1; } }
  });
  document.body.setAttribute("data-figures-loaded", ok + "/" + imgs.length);
  console.log("figures-loaded " + ok + "/" + imgs.length);
});
"""


@dataclass
class ReportFigure:
    """One figure of a report and the table it was drawn from.

    Attributes:
        id: a short slug (letters, digits, ``-``), unique in the report: anchors ``fig-<id>``
            and ``table-<id>``.
        title: heading of the figure's section.
        png: the PNG file to embed (written by the caller, e.g. next to an SVG twin).
        table: the ``pandas.DataFrame`` behind the figure.
        caption: what the figure shows and how to read it.
        files: other files of the figure (SVG, CSV) named in the caption, relative names.
    """

    id: str
    title: str
    png: Path
    table: Any
    caption: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class Claim:
    """A claim of the paper and this run's verdict on it: ``"shown"``, ``"not shown"``,
    ``"contradicted"`` (judged on an interval: :mod:`diffeosense.experiments.verdicts`), or
    None when the run cannot tell (too few points); ``estimate`` is the number judged with its
    interval (``"+0.61 [-0.09, +0.97]"``), ``evidence`` the numbers behind it."""

    text: str
    verdict: str | None
    evidence: str
    figure: str | None = None
    estimate: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in (None, "shown", "not shown", "contradicted"):
            raise ValueError(f"a claim's verdict is 'shown', 'not shown', 'contradicted' or "
                             f"None, got {self.verdict!r}")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _cell(v: Any) -> tuple[str, bool]:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN", False
        return (f"{v:.4g}" if v != 0 else "0"), False
    if isinstance(v, bool | int):
        return str(v), False
    return str(v), True


# Columns that hold the interval of another column ``X``: its standard error, or the two ends
# of a confidence interval (bootstrap, Fisher z, ...).
_SE = ("_se",)
_ENDS = (("_lo", "_hi"), ("_low", "_high"), ("_ci_low", "_ci_high"), ("_lower", "_upper"))


def interval_columns(columns) -> dict[str, tuple[str, ...]]:
    """``{X: (X_se,)}`` or ``{X: (X_lo, X_hi)}`` for every column ``X`` of ``columns`` that
    has an interval beside it: the report shows each such number with its interval.

    >>> interval_columns(["D", "D_se", "rho", "rho_lo", "rho_hi", "n"])
    {'D': ('D_se',), 'rho': ('rho_lo', 'rho_hi')}
    """
    cols = list(columns)
    out: dict[str, tuple[str, ...]] = {}
    for c in cols:
        for lo, hi in _ENDS:
            if f"{c}{lo}" in cols and f"{c}{hi}" in cols:
                out[c] = (f"{c}{lo}", f"{c}{hi}")
                break
        else:
            if f"{c}_se" in cols:
                out[c] = (f"{c}_se",)
    return out


def _table_html(df, table_id: str, fig_id: str) -> str:
    # Each number with its interval in one cell ("0.073 ± 0.0039", "0.87 [0.41, 0.98]"); the
    # CSV keeps every column as it is.
    pairs = interval_columns(df.columns)
    folded = {c for v in pairs.values() for c in v}
    shown = [c for c in df.columns if c not in folded]
    head = "".join(f"<th>{_e(c)}{' (± s.e.)' if pairs.get(c, ('',))[0].endswith('_se') else ''}"
                   f"{' [interval]' if len(pairs.get(c, ())) == 2 else ''}</th>" for c in shown)
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for c in shown:
            v = rec[c]
            text, is_text = _cell(v.item() if hasattr(v, "item") else v)
            if c in pairs and not is_text and text != "NaN":
                ends = [_cell(float(rec[k]))[0] for k in pairs[c]]
                text += f" ± {ends[0]}" if len(ends) == 1 else f" [{ends[0]}, {ends[1]}]"
            cls = ' class="text"' if is_text else ""
            cells.append(f"<td{cls}>{_e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    csv = base64.b64encode(df.to_csv(index=False).encode()).decode()
    return (f'<table id="{table_id}"><caption>Table of <a href="#{fig_id}">figure {fig_id[4:]}'
            f'</a> (<a download="{_e(fig_id[4:])}.csv" href="data:text/csv;base64,{csv}">CSV</a>)'
            f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


_VERDICT_CLASS = {"shown": "yes", "not shown": "na", "contradicted": "no"}


def _verdict(c: Claim) -> str:
    if c.verdict is None:
        return '<span class="na">cannot tell</span>'
    return f'<span class="{_VERDICT_CLASS[c.verdict]}">{c.verdict}</span>'


def render_report(title: str, figures: list[ReportFigure], claims: list[Claim],
                  config: Any, provenance: dict, command: str,
                  notes: list[str] | None = None,
                  compare: tuple[str, list[Claim]] | None = None) -> str:
    """The report as an HTML string (see the module docstring); figures are read from disk.
    ``compare``: ``(label, claims of another run)``, shown beside this run's verdict and
    estimate (matched by the claim's text; a claim the other run did not judge: blank)."""
    ids = [f.id for f in figures]
    if len(set(ids)) != len(ids):
        raise ValueError(f"figure ids must be unique, got {ids}")
    for f in figures:
        if not f.id or not all(ch.isalnum() or ch == "-" for ch in f.id):
            raise ValueError(f"figure id {f.id!r} must be letters, digits and '-'")
        if not Path(f.png).exists():
            raise FileNotFoundError(f"figure {f.id!r}: no PNG at {f.png}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8" />',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        f"<title>{_e(title)}</title><style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p>Made by the command</p><pre id="command"><code>{_e(command)}</code></pre>',
    ]
    for n in notes or []:
        parts.append(f"<p>{_e(n)}</p>")
    parts.append('<h2 id="claims">The paper\'s claims</h2>')
    parts.append("<p>A claim is <em>shown</em> when the interval of its estimate excludes zero "
                 "on the paper's side (and a claimed magnitude is reached), <em>contradicted"
                 "</em> when it excludes zero on the other side, <em>not shown</em> otherwise "
                 "(95 % intervals: bootstrap over the nets, or t over seeds for slopes).</p>")
    other = {c.text: c for c in compare[1]} if compare else {}
    head = (f"<th>{_e(compare[0])}</th><th>its estimate [95 % interval]</th>"
            if compare else "")
    parts.append('<table><thead><tr><th>claim</th><th>this run</th><th>estimate [95 % '
                 f'interval]</th>{head}<th>the numbers</th><th>figure</th></tr></thead><tbody>')
    for c in claims:
        link = f'<a href="#fig-{_e(c.figure)}">{_e(c.figure)}</a>' if c.figure else ""
        beside = ""
        if compare:
            o = other.get(c.text)
            beside = (f'<td class="text">{_verdict(o) if o else ""}</td>'
                      f'<td class="text">{_e(o.estimate or "") if o else ""}</td>')
        parts.append(f'<tr><td class="text">{_e(c.text)}</td><td class="text">{_verdict(c)}'
                     f'</td><td class="text">{_e(c.estimate or "")}</td>{beside}'
                     f'<td class="text">{_e(c.evidence)}</td><td class="text">{link}</td></tr>')
    parts.append("</tbody></table>")
    for f in figures:
        png = base64.b64encode(Path(f.png).read_bytes()).decode()
        files = (" Files: " + ", ".join(f.files) + ".") if f.files else ""
        parts.append(
            f'<h2 id="section-{f.id}">{_e(f.title)}</h2>'
            f'<figure id="fig-{f.id}"><img alt="{_e(f.title)}" '
            f'src="data:image/png;base64,{png}" />'
            f"<figcaption>{_e(f.caption)}{_e(files)} "
            f'<a href="#table-{f.id}">Its table</a>.</figcaption></figure>')
        parts.append(_table_html(f.table, f"table-{f.id}", f"fig-{f.id}"))
    parts.append('<h2 id="config">Config</h2>')
    parts.append(f"<pre><code>{_e(json.dumps(_io.to_jsonable(config), indent=1))}</code></pre>")
    parts.append('<h2 id="versions">Versions and machine</h2><table><tbody>')
    for k, v in sorted(provenance.items()):
        parts.append(f'<tr><th>{_e(k)}</th><td class="text">{_e(v)}</td></tr>')
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike, title: str, figures: list[ReportFigure],
                 claims: list[Claim], config: Any, provenance: dict, command: str,
                 notes: list[str] | None = None,
                 compare: tuple[str, list[Claim]] | None = None) -> Path:
    """Write :func:`render_report` atomically to ``path``; returns the path."""
    return _io.write_text(path, render_report(title, figures, claims, config, provenance,
                                              command, notes, compare))
