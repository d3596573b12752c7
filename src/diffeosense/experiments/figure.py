"""What a figure of the paper is, for ``diffeosense reproduce``: the protocol and the registry.

A figure is one module of :mod:`diffeosense.experiments.figures` that holds

* its **presets**: ``PRESETS = {scale: config}``, frozen config instances keyed by scale
  (``"quick"``, ``"paper"``, ...), each hyperparameter with its reason beside it;
* the **units** it needs: :class:`~diffeosense.experiments.run.RunConfig` s run by the sweep
  engine through :meth:`FigureContext.sweep` (or an experiment whose own units go through it);
* the **tables** it reduces them to (:meth:`FigureContext.write_table`: CSV with a checked
  sidecar), its **claims** (the paper's statements with this run's verdict and the numbers
  behind it) and its **plots** (:meth:`FigureContext.save_figure`: PNG, SVG and PDF);

and registers itself with :func:`register_figure`. ``reproduce`` (the loop and the report)
finds every module of the package by itself, so adding a figure is adding one file::

    # src/diffeosense/experiments/figures/my_figure.py
    PRESETS = {"quick": MyConfig(...), "paper": MyConfig(...)}

    def run(cfg: MyConfig, ctx: FigureContext) -> FigureOutput:
        failed = ctx.sweep(units(cfg, ctx.options))        # train + measure, resumable
        table = reduce(cfg, ctx.runs)                       # the figure's table
        ctx.write_table(table, "my_figure.csv", cfg)
        ctx.save_figure(plot(table), "my_figure")           # my_figure.png, .svg, .pdf
        return FigureOutput([ReportFigure(...)], claims(table), failed_runs=failed)

    register_figure(Figure("my-figure", number=5, presets=PRESETS, run=run,
                           summary="what it shows"))

>>> sorted(list_figures())
['filter-spectra', 'layerwise', 'noisy-training', 'scale-detection']
>>> get_figure("layerwise").scales
('quick', 'medium', 'paper')
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "FigureContext", "FigureOutput", "ReproduceOptions", "register_figure",
           "get_figure", "list_figures"]


@dataclass
class ReproduceOptions:
    """Where and how the units execute (not what they compute): the same for every figure;
    and ``data``: :class:`~diffeosense.data.DataConfig` fields (``name``, ``resize``,
    ``crop``, ``normalize``) that replace those of every figure's preset (``reproduce
    --data``: the presets' grid on another dataset; empty: the presets' own)."""

    backend: str = "local"
    workers: int | None = None
    device: str = "cpu"
    data_root: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class FigureOutput:
    """What a figure's ``run`` returns: its report figures (``diffeosense.report.ReportFigure``),
    its claims (``{"text", "verdict", "estimate", "evidence", "figure"}``; verdicts from
    :mod:`~diffeosense.experiments.verdicts`) and how many units failed."""

    figures: list
    claims: list[dict[str, Any]]
    failed_runs: int = 0


@dataclass(frozen=True)
class Figure:
    """A registered figure.

    Attributes:
        name: its name on the command line (``reproduce noisy-training``).
        number: the paper's figure number: the order of ``reproduce all`` and of the report.
        presets: ``{scale: config}``; ``run`` gets ``presets[scale]``.
        run: ``run(config, ctx) -> FigureOutput``.
        summary: one line for ``--help``: what the figure shows.
        units: ``units(config, options) -> list[RunConfig]``, the training runs ``run``
            sweeps (``reproduce --dry-run`` lists them); None: the figure's units are not
            :class:`~diffeosense.experiments.run.RunConfig` runs.
    """

    name: str
    number: float
    presets: Mapping[str, Any]
    run: Callable[[Any, FigureContext], FigureOutput]
    summary: str = ""
    units: Callable[[Any, ReproduceOptions], list] | None = None

    @property
    def folder(self) -> str:
        """The figure's folder under ``reproduce --out`` (``noisy_training``)."""
        return self.name.replace("-", "_")

    @property
    def scales(self) -> tuple[str, ...]:
        return tuple(self.presets)

    def preset(self, scale: str) -> Any:
        if scale not in self.presets:
            raise ValueError(f"figure {self.name!r} has no {scale!r} preset; its scales: "
                             f"{', '.join(self.presets)}")
        return self.presets[scale]


_REGISTRY: dict[str, Figure] = {}


def register_figure(figure: Figure) -> Figure:
    """Add ``figure`` to the registry (a module registers its figure once, at import)."""
    if figure.name in _REGISTRY and _REGISTRY[figure.name].run is not figure.run:
        raise ValueError(f"a figure named {figure.name!r} is already registered")
    _REGISTRY[figure.name] = figure
    return figure


def _discover() -> None:
    from . import figures

    for m in pkgutil.iter_modules(figures.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{figures.__name__}.{m.name}")


def list_figures() -> list[str]:
    """The registered figures' names, in the paper's order."""
    _discover()
    return [f.name for f in sorted(_REGISTRY.values(), key=lambda f: f.number)]


def get_figure(name: str) -> Figure:
    """The figure called ``name`` (``ValueError`` naming the registered ones otherwise)."""
    names = list_figures()
    if name not in _REGISTRY:
        raise ValueError(f"unknown figure {name!r}; available: {', '.join(names)}, all")
    return _REGISTRY[name]


@dataclass
class FigureContext:
    """Where one figure runs: its scale, its folder ``out``, the shared ``runs`` folder (a net
    needed by two figures is trained once) and the execution options; with the helpers every
    figure uses."""

    figure: str
    scale: str
    out: Path
    runs: Path
    options: ReproduceOptions

    def sweep(self, configs: list) -> int:
        """Run ``configs`` (``RunConfig`` s) into ``runs`` on the options' backend; finished
        units are skipped, killed ones resume. Returns the number of failed units."""
        return len(self.sweep_report(configs, self.runs).failed)

    def sweep_report(self, configs: list, root: Path):
        """:func:`~diffeosense.experiments.sweep.run_sweep` of ``configs`` into ``root`` with
        the options' backend, printing one line per unit unless ``progress`` is off."""
        from .sweep import outcome_printer, run_sweep

        opts = self.options
        return run_sweep(configs, root, opts.backend, workers=opts.workers,
                         on_result=outcome_printer("run", opts.progress),
                         **opts.backend_options)

    def require_done(self, configs: list, at_least: int | None = None) -> list:
        """The finished configs among ``configs``; ``ValueError`` (re-run to resume) when
        fewer than ``at_least`` (default: all) finished."""
        done = [c for c in configs if (self.runs / c.hash() / "done").is_file()]
        need = len(configs) if at_least is None else at_least
        if len(done) < need:
            missing = [c.train.model for c in configs if c not in done]
            raise ValueError(f"{self.figure}: only {len(done)} of {len(configs)} runs finished "
                             f"(not: {', '.join(dict.fromkeys(missing))}; see error.txt in "
                             f"{self.runs}, or they run in another process); re-run the same "
                             f"command to resume")
        return done

    def write_table(self, df, name: str, config: Any) -> Path:
        """``out/name`` with its checked sidecar (figure, scale, the preset, provenance, the
        table's row count and SHA-256): :func:`diffeosense._io.read_table` refuses it once
        truncated or edited."""
        from .._io import to_jsonable, write_table
        from ..provenance import provenance

        config = config if isinstance(config, dict) else to_jsonable(config)
        return write_table(self.out / name, df, {
            "format": "diffeosense.reproduce-table/1", "figure": self.figure,
            "scale": self.scale, "config": config, "provenance": provenance()})

    def save_figure(self, fig, stem: str) -> Path:
        """``out/stem.png`` with ``out/stem.svg`` and ``out/stem.pdf``; returns the PNG's
        path."""
        from ..plots.reproduce import save_png_svg

        save_png_svg(fig, self.out / stem)
        return self.out / f"{stem}.png"

    def replace(self, **changes: Any) -> FigureContext:
        return dataclasses.replace(self, **changes)
