"""The HTML report: well-formed, self-contained, every figure linked to its table, and rendered
by a real browser (headless Chromium) with every figure loaded and no console errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pandas as pd
import pytest

from diffeosense.report import Claim, ReportFigure, render_report, write_report


def _png(path, colour):
    from matplotlib.figure import Figure

    from diffeosense.plots._save import save_figure

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([1, 2, 3], [1, 4, 9], color=colour)
    ax.set_title("a <figure> & more")
    return save_figure(fig, path)


@pytest.fixture
def report(tmp_path):
    figs = [ReportFigure("one", "First & foremost", _png(tmp_path / "a.png", "C0"),
                         pd.DataFrame({"model": ["fc2", "lenet"], "D": [0.5, float("nan")]}),
                         caption="x < y", files=["a.svg"]),
            ReportFigure("two-b", "Second", _png(tmp_path / "b.png", "C1"),
                         pd.DataFrame({"noise": [0.0, 1.0], "rho": [0.3, -0.2]}))]
    claims = [Claim("D grows with error", "shown", "rho = +0.30", "one", "+0.30 [+0.1, +0.5]"),
              Claim("G falls with error", "not shown", "rho = +0.10", "two-b"),
              Claim("too few nets", None, "n = 2"),
              Claim("R rises", "contradicted", "rho = -0.9", None, "-0.90 [-1.0, -0.7]")]
    path = write_report(tmp_path / "report.html", "Report <test>", figs, claims,
                        {"lr": 0.01, "nets": ["fc2"]}, {"torch": "2.x", "python": "3.11"},
                        "diffeosense reproduce noisy-training --scale quick --out 'x y'",
                        notes=["Time: 1 s"])
    return path


class _Collect(HTMLParser):
    """Tag balance (void elements aside) and every src/href attribute."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.urls, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href"):
                self.urls.append(v)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href"):
                self.urls.append(v)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_report_is_valid_and_self_contained(report):
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    p = _Collect()
    p.feed(text)
    assert not p.errors and p.stack == []
    # Well-formed XML too (a strict parser: every element closed, every entity escaped).
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "html" and root.find("head/title").text == "Report <test>"
    # Self-contained: nothing but in-page anchors and data: URIs; a CSP forbids any fetch.
    assert p.urls and all(u.startswith(("#", "data:")) for u in p.urls), p.urls
    assert not re.search(r"(https?:|//)[^\s\"']*\.", " ".join(p.urls))
    assert "default-src 'none'" in text
    assert "diffeosense reproduce noisy-training --scale quick --out &#x27;x y&#x27;" in text


def test_every_figure_links_to_its_table_and_back(report):
    root = ET.fromstring(report.read_text().split("\n", 1)[1])
    ids = {e.get("id"): e for e in root.iter() if e.get("id")}
    figures = [e for e in root.iter("figure")]
    assert [f.get("id") for f in figures] == ["fig-one", "fig-two-b"]
    for f in figures:
        key = f.get("id")[4:]
        links = [a.get("href") for a in f.iter("a")]
        assert f"#table-{key}" in links
        table = ids[f"table-{key}"]
        assert table.tag == "table"
        assert f"#fig-{key}" in [a.get("href") for a in table.iter("a")]
        img = f.find("img")
        assert img.get("src").startswith("data:image/png;base64,")
    rows = ids["table-one"].findall("tbody/tr")
    assert [td.text for td in rows[1]] == ["lenet", "NaN"]
    # claims table: one row per claim with its verdict, linked to its figure
    claims = [t for t in root.iter("table")
              if t.find("thead/tr/th") is not None and t.find("thead/tr/th").text == "claim"][0]
    verdicts = ["".join(r[1].itertext()) for r in claims.findall("tbody/tr")]
    assert verdicts == ["shown", "not shown", "cannot tell", "contradicted"]
    intervals = ["".join(r[2].itertext()) for r in claims.findall("tbody/tr")]
    assert intervals == ["+0.30 [+0.1, +0.5]", "", "", "-0.90 [-1.0, -0.7]"]


def test_bad_figures_are_refused(tmp_path):
    df = pd.DataFrame({"a": [1]})
    png = _png(tmp_path / "a.png", "C0")
    with pytest.raises(ValueError, match="unique"):
        render_report("t", [ReportFigure("a", "A", png, df), ReportFigure("a", "B", png, df)],
                      [], {}, {}, "cmd")
    with pytest.raises(ValueError, match="letters"):
        render_report("t", [ReportFigure("a b", "A", png, df)], [], {}, {}, "cmd")
    with pytest.raises(FileNotFoundError, match="no PNG"):
        render_report("t", [ReportFigure("a", "A", tmp_path / "none.png", df)], [], {}, {}, "c")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render_in_chromium(html_path, out_dir):
    """Screenshot and DOM of ``html_path`` after load, with the browser's log (stderr)."""
    exe = _chromium()
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
              "--virtual-time-budget=5000"]
    url = html_path.resolve().as_uri()
    shot = out_dir / "screenshot.png"
    runs = []
    for extra in ([f"--screenshot={shot}", "--window-size=1200,2400"], ["--dump-dom"]):
        prof = out_dir / f"profile{len(runs)}"
        runs.append(subprocess.run(common + [f"--user-data-dir={prof}", *extra, url],
                                   capture_output=True, text=True, timeout=120))
    return shot, runs[1].stdout, runs[0].stderr + runs[1].stderr


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="chromium is not installed (Debian: apt-get install chromium; "
                    ".ci/run installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot, dom, log = render_in_chromium(report, tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == bytes.fromhex("89504e470d0a1a0a")
    # The page's own check, run by the browser after load: every figure decoded.
    m = re.search(r'data-figures-loaded="(\d+)/(\d+)"', dom)
    assert m and m.group(1) == m.group(2) == "2", dom[:500]
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert any("figures-loaded 2/2" in line for line in console), log[-2000:]
    errors = [line for line in console if re.search(r"error|Refused|Uncaught", line, re.I)]
    assert not errors, errors


def test_one_title_one_command_and_numbers_with_their_intervals(tmp_path):
    """The title once in the page (and as its <title>), the command once and the same as the
    one recorded; a number with an interval column beside it shown with its interval."""
    from diffeosense.experiments.figure import get_figure
    from diffeosense.experiments.reproduce import report_title

    title = report_title([get_figure(n) for n in ("noisy-training", "layerwise")], "quick")
    command = "diffeosense reproduce all --scale quick --workers 2 --out /tmp/x"
    table = pd.DataFrame({"model": ["lenet"], "D": [0.073], "D_se": [0.0039], "rho": [0.87],
                          "rho_lo": [0.41], "rho_hi": [0.98]})
    path = write_report(tmp_path / "r.html", title, [ReportFigure(
        "a", "A", _png(tmp_path / "a.png", "C0"), table)], [], {}, {}, command)
    root = ET.fromstring(path.read_text().split("\n", 1)[1])
    body = "".join(root.find("body").itertext())
    assert body.count(title) == 1 and root.find("head/title").text == title
    assert "reproduce" not in title.split(":")[0].split()  # a title, not a command
    commands = re.findall(r"diffeosense reproduce [^\n<]*", body)
    assert commands == [command]
    cells = ["".join(td.itertext()) for td in root.find(".//table[@id='table-a']/tbody/tr")]
    assert cells == ["lenet", "0.073 ± 0.0039", "0.87 [0.41, 0.98]"]


def test_time_note_says_when_a_pass_reused_every_run(tmp_path):
    import json

    from diffeosense.experiments.reproduce import first_run_seconds, time_note

    cfg = {"noisy-training": {"a": 1}, "layerwise": {"b": 2}}
    (tmp_path / "reproduce_first_run.json").write_text(json.dumps(
        {"figures": cfg, "seconds": {"noisy-training": 180.8, "layerwise": 24.6}}))
    first = first_run_seconds(tmp_path, cfg, {"noisy-training": 2.0, "layerwise": 1.0},
                              {"noisy-training": 0, "layerwise": 0})
    assert first == {"noisy-training": 180.8, "layerwise": 24.6}
    note = time_note({"noisy-training": 2.0, "layerwise": 1.0}, first, {})
    assert "noisy-training 181 s (this pass reused every finished run and took 2 s)" in note
    # Another preset: the earlier time is not this figure's.
    other = first_run_seconds(tmp_path, {"noisy-training": {"a": 9}, "layerwise": {"b": 2}},
                              {"noisy-training": 2.0, "layerwise": 1.0}, {})
    assert other["noisy-training"] is None
    assert "not recorded" in time_note({"noisy-training": 2.0}, other, {})
