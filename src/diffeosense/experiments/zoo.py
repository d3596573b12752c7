"""A model zoo: many networks, untrained (or with pretrained weights), measured on one dataset
into one tidy table of D, G, R and the test error.

Each model is a model spec (:mod:`diffeosense.models.specs`: ``simplecnn``,
``torchvision:resnet18``, ``timm:resnet18``, ``FILE.py:FACTORY``, ...) with its options and
initialization seed (:class:`ZooModel`). :func:`run_zoo` resolves the data once
(:func:`diffeosense.sources.resolve_data`: the same probes for every model), then for each model
composes :func:`~diffeosense.sources.resolve_model`, :meth:`~diffeosense.sources.ModelSource.build`,
:func:`~diffeosense.sources.check_fits` and :func:`~diffeosense.sensitivity.measure` (the same
seed, probes, diffeos and noise for every model) and :func:`classification_error`::

    out/
      models/<name>-<hash>.csv   one SensitivityResult per model (+ .meta.json): `plot` reads it;
                                 config["zoo"] holds its test error, classes, timings, warnings
      zoo.csv (+ .meta.json)     every finished model's rows, one table (ZOO_COLUMNS)
      zoo.json                   the run: data, measurement, each model's status and error

The run is resumable: ``<hash>`` is :func:`~diffeosense.provenance.config_hash` of everything
a model's result depends on (:func:`model_key`: spec, options, seeds, data and its probes, the
measurement, ``n_test``), so a re-run loads a finished model's table instead of measuring it
again, and a changed option measures anew. Each table is written atomically as soon as its
model finishes, under the folder's :func:`~diffeosense._io.run_lock`. A model that fails (an
unknown name, a net that cannot take the data, weights missing offline) is recorded with its
reason (``outcomes``, ``zoo.json``) and the others still run; a re-run retries it.

Test error: on the test split, eval mode, no grad, in batches, the first ``n_test`` samples
(all by default), counted (``n_test`` column). It is NaN, with the reason in ``error_reason``,
when the dataset has no labels or no test split, or when the model's outputs do not match the
dataset's classes (a pretrained 1000-class ImageNet head on a 10-class dataset:
``output_classes`` 1000, ``data_classes`` 10).

Pretrained weights: ``model_kwargs={"weights": "DEFAULT"}`` (torchvision enum names, or
``"pretrained"`` for timm) load from torch's and Hugging Face's local caches; offline, a model
whose weights are not cached fails by name and the others run.

>>> import tempfile
>>> z = run_zoo(["fc2", ZooModel("simplecnn", {"depth": 1, "width": 4})],
...             data="mnist-embedded", out=tempfile.mkdtemp(), n_probes=16, n_test=100)
>>> z.table[["model", "layer", "n_test"]].values.tolist()
[['fc2', 'output', 100], ['simplecnn depth=1,width=4', 'output', 100]]
>>> bool((z.table.R > 0).all()), z.failed
(True, [])
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _io
from ..sources import DEFAULT_DATA

__all__ = ["ZooModel", "ZooResult", "run_zoo", "load_zoo", "classification_error",
           "model_key", "ZOO_COLUMNS", "ZOO_FORMAT"]

ZOO_FORMAT = "diffeosense.zoo/1"
# The zoo's own columns, then those of a sensitivity table.
_MODEL_COLUMNS = ["model", "spec", "model_seed", "data"]
_EVAL_COLUMNS = ["test_error", "test_error_se", "n_test", "error_reason", "output_classes",
                 "data_classes", "n_params", "seconds"]


def _columns() -> list[str]:
    from ..sensitivity import COLUMNS

    return [*_MODEL_COLUMNS, *COLUMNS, *_EVAL_COLUMNS]


ZOO_COLUMNS = _columns()


@dataclass
class ZooModel:
    """One network of a zoo: a model spec, its options (``create_model`` keyword arguments,
    ``weights=`` for pretrained weights) and its initialization seed; ``label`` names it in
    the table (default :attr:`name`)."""

    spec: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model_seed: int = 0
    label: str | None = None

    @property
    def name(self) -> str:
        """``label``, else the spec with its options: ``"simplecnn depth=4,width=8"``."""
        if self.label:
            return self.label
        opts = ",".join(f"{k}={v}" for k, v in self.model_kwargs.items())
        return f"{self.spec} {opts}" if opts else self.spec


@dataclass
class ZooResult:
    """What :func:`run_zoo` returns.

    Attributes:
        table: every finished model's rows (:data:`ZOO_COLUMNS`), in the order of the models.
        outcomes: one dict per model: ``model`` (its name), ``spec``, ``status`` (``"done"``,
            ``"skipped"``: loaded from an earlier run, or ``"failed"``), ``file`` (its table),
            ``error`` (why it failed), ``seconds``.
        out: the zoo folder.
        files: ``{"table": zoo.csv, "summary": zoo.json}``.
    """

    table: Any
    outcomes: list[dict[str, Any]]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["status"] == "failed"]


def _as_models(models, model_kwargs: dict[str, Any] | None, model_seed: int) -> list[ZooModel]:
    """Specs and :class:`ZooModel`\\ s -> ZooModels; shared ``model_kwargs`` go under each
    model's own options."""
    if isinstance(models, str | ZooModel):
        models = [models]
    out = []
    for m in models:
        if isinstance(m, str):
            m = ZooModel(m, model_seed=model_seed)
        elif not isinstance(m, ZooModel):
            raise TypeError(f"a zoo model is a model spec or a ZooModel, got {m!r}")
        out.append(dataclasses.replace(m, model_kwargs={**(model_kwargs or {}),
                                                        **m.model_kwargs}))
    if not out:
        raise ValueError("the zoo has no models: give at least one model spec")
    names = [m.name for m in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"model(s) {', '.join(twice)} listed twice: give each once (or a "
                         f"ZooModel label to tell them apart)")
    return out


def model_key(model: ZooModel, data, measure_config, n_test: int | None) -> dict[str, Any]:
    """Everything a zoo model's result depends on (hashed into its file name): the spec, its
    options and seed, the dataset config (less where it is read from), which probes, the
    :class:`~diffeosense.sensitivity.MeasureConfig` and ``n_test``. Where it runs (device)
    and the label are not part of it."""
    dcfg = {k: v for k, v in dataclasses.asdict(data.config).items()
            if k not in ("root", "download")}
    return _io.to_jsonable({
        "format": ZOO_FORMAT, "spec": model.spec, "model_kwargs": model.model_kwargs,
        "model_seed": model.model_seed, "data": dcfg,
        "probes": {"split": data.split, "order": data.order, "n": int(data.probes.shape[0])},
        "measure": dataclasses.asdict(measure_config), "n_test": n_test})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", name).strip("-.")[:60] or "model"


# ------------------------------------------------------------------ test error
@torch.no_grad()
def classification_error(model: nn.Module, dataset, *, n: int | None = None,
                         batch_size: int = 256, device: str | torch.device | None = None,
                         output: str | int | None = None) -> dict[str, Any]:
    """The error of ``model`` on the first ``n`` samples (all: ``None``) of ``dataset``'s
    test split, in eval mode, without gradients, ``batch_size`` samples at a time (every
    module's mode and the model's device restored afterwards).

    Classes ``y: [N]`` (int): an error is ``argmax_k f_k(x) != y``, with ``f(x): [B, K]`` and
    ``K`` the dataset's number of classes. Labels in {-1, +1} (float): ``y f(x) <= 0`` with a
    scalar ``f(x)``, as :func:`diffeosense.train.evaluate` counts them. ``output`` picks one
    of several outputs as :func:`~diffeosense.sensitivity.measure` does.

    Returns ``{"error", "error_se", "n", "reason", "output_classes", "data_classes"}``:
    ``error_se = sqrt(e (1 - e) / n)``; without labels, without a test split, or when the
    model's outputs per sample (``output_classes``) are not the dataset's classes, ``error``
    is NaN, ``n`` 0 and ``reason`` says why.

    >>> from diffeosense.data import ImageDataset
    >>> ds = ImageDataset.from_tensors(torch.zeros(4, 1, 2, 2), torch.zeros(4).long(),
    ...                                torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1]))
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad(): _ = net[1].bias.copy_(torch.tensor([0.0, 1.0]))
    >>> r = classification_error(net, ds)                    # always says class 1
    >>> r["error"], r["n"]
    (0.3333333333333333, 3)
    >>> classification_error(nn.Flatten(), ds)["reason"]
    'the model gives 4 outputs per sample; the dataset has 2 classes'
    """
    from ..layers import _output_tensor

    classes = int(dataset.num_classes)
    res: dict[str, Any] = {"error": math.nan, "error_se": math.nan, "n": 0, "reason": "",
                           "output_classes": None, "data_classes": classes}
    if dataset.y_train is None and dataset.y_test is None:
        return {**res, "reason": "the dataset has no labels"}
    if dataset.x_test is None or dataset.y_test is None:
        return {**res, "reason": "the dataset has no test split"}
    x, y = dataset.x_test, dataset.y_test
    if n is not None:
        x, y = x[:n], y[:n]
    binary = y.is_floating_point()  # +-1 labels: a scalar output, its sign
    home = next((t.device for t in [*model.parameters(), *model.buffers()]),
                torch.device("cpu"))
    device = torch.device(device) if device is not None else home
    modes = {m: m.training for m in model.modules()}
    errors = 0
    try:
        model.to(device).eval()
        for s in range(0, len(x), batch_size):
            out = _output_tensor(model(x[s:s + batch_size].to(device)), output)
            if out is None:
                return {**res, "reason": "the model's output holds no tensor"}
            f = out.reshape(len(out), -1)
            if s == 0:
                res["output_classes"] = k = int(f.shape[1])
                want = 1 if binary else classes
                if k != want or (out.dim() > 2 and not binary):
                    what = "a scalar output (labels +-1)" if binary else f"{classes} classes"
                    return {**res, "reason": f"the model gives {k} outputs per sample; the "
                            f"dataset has {what}"}
            yb = y[s:s + batch_size].to(device)
            wrong = (yb * f[:, 0] <= 0) if binary else (f.argmax(1) != yb)
            errors += int(wrong.sum())
    finally:
        for m, mode in modes.items():
            m.training = mode
        model.to(home)
    e = errors / len(x)
    return {**res, "error": e, "error_se": math.sqrt(e * (1 - e) / len(x)), "n": len(x)}


# ------------------------------------------------------------------ the zoo
def run_zoo(models, *, out: str | Path, data: str = DEFAULT_DATA, n_probes: int | None = 500,
            layers: Any = "output", model_kwargs: dict[str, Any] | None = None,
            model_seed: int = 0, seed: int = 0, measure_kwargs: dict[str, Any] | None = None,
            data_options: dict[str, Any] | None = None, n_test: int | None = None,
            device: str | None = None, data_root: str | None = None, download: bool = True,
            fmt: str = "csv", progress: bool = False, log: Any = None) -> ZooResult:
    """Measure every model of ``models`` on the same probes of ``data`` into ``out``.

    Args:
        models: model specs and/or :class:`ZooModel`\\ s (spec, options, seed, label).
        out: the zoo folder (see the module docstring for its files).
        data: a dataset spec (:mod:`diffeosense.data.specs`); ``data_options``: its
            ``resize``, ``crop``, ``normalize`` (e.g. ``{"normalize": "imagenet"}`` for
            pretrained nets); ``data_root``, ``download``: where the datasets are.
        n_probes: probes (the first of the test split; None: all); the same for every model.
        layers: what :func:`~diffeosense.sensitivity.measure` taps: ``"output"`` (default),
            ``"all"``, a kind preset or names.
        model_kwargs: options given to every model (under each :class:`ZooModel`'s own), e.g.
            ``{"weights": "DEFAULT"}``; ``model_seed``: the seed of every spec's
            initialization (as ``measure --model-seed``).
        seed: the measurement seed (diffeos and noise), the same for every model.
        measure_kwargs: other :class:`~diffeosense.sensitivity.MeasureConfig` fields
            (``perturbation``: default the dataset's, ``batch_size``, ``statistic``, ...).
        n_test: test samples for the error (None: the whole test split).
        device: where the models run (default: cuda if available).
        fmt: table format, ``"csv"``, ``"parquet"`` or ``"json"``.
        log: called with one line per model as it finishes (e.g. ``print``).

    Returns:
        :class:`ZooResult`: the table, each model's outcome; failures do not raise.
    """
    from ..sensitivity import MeasureConfig
    from ..sources import resolve_data, resolve_device

    entries = _as_models(models, model_kwargs, model_seed)
    extra = dict(measure_kwargs or {})
    own = {"layers", "n_probes", "seed"} & set(extra)
    fields = {f.name for f in dataclasses.fields(MeasureConfig)}
    unknown = sorted(set(extra) - fields)
    if own or unknown:
        raise ValueError(f"measure_kwargs {sorted(own or unknown)}: "
                         + ("layers, n_probes and seed are run_zoo's own arguments" if own else
                            f"not MeasureConfig fields ({', '.join(sorted(fields))})"))
    if fmt not in ("csv", "parquet", "json"):
        raise ValueError(f"fmt must be csv, parquet or json, got {fmt!r}")
    if n_test is not None and n_test < 1:
        raise ValueError(f"n_test must be >= 1 (or None: the whole test split), got {n_test}")
    out = Path(out)
    log = log or (lambda line: None)
    with _io.run_lock(out):
        src = resolve_data(data, None, root=data_root, download=download, n_probes=n_probes,
                           options=data_options)
        mcfg = MeasureConfig(layers=layers, n_probes=int(src.probes.shape[0]), seed=seed,
                             **{**extra, "perturbation": extra.get("perturbation")
                                or src.perturbation})
        device = resolve_device(device)
        results, outcomes = [], []
        for m in entries:
            res, outcome = _one(m, src, mcfg, n_test, device, out, fmt, progress)
            outcomes.append(outcome)
            if res is not None:
                results.append(res)
            log(_describe(outcome, res))
        table = _table(results)
        files = _write_summary(out, table, outcomes, src, mcfg, n_test, fmt, data)
    return ZooResult(table, outcomes, out, files)


def _one(m: ZooModel, src, mcfg, n_test, device, out: Path, fmt: str, progress: bool):
    """Measure (or load) one model: ``(SensitivityResult | None, outcome)``."""
    from ..sensitivity import SensitivityResult

    key = model_key(m, src, mcfg, n_test)
    path = out / "models" / f"{_slug(m.name)}-{_hash(key)}.{fmt}"
    outcome = {"model": m.name, "spec": m.spec, "status": "done", "file": str(path),
               "error": None, "seconds": 0.0}
    if path.exists():
        try:
            res = SensitivityResult.load(path)
        except (ValueError, OSError) as e:  # damaged: measured again
            warnings.warn(f"{m.name}: {path} cannot be read ({e}); measuring it again",
                          stacklevel=3)
        else:
            if res.config.get("zoo", {}).get("key") == key:
                outcome.update(status="skipped", seconds=res.config["zoo"]["seconds"]["total"])
                return res, outcome
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = _measure_one(m, src, mcfg, n_test, device, progress)
    except Exception as e:  # noqa: BLE001 - one model's failure is reported; the others run
        first = (str(e).splitlines() or [""])[0]
        outcome.update(status="failed", error=f"{type(e).__name__}: {first}",
                       seconds=time.perf_counter() - t0, file=None)
        return None, outcome
    said = [f"{w.category.__name__}: {w.message}" for w in caught]
    for line in dict.fromkeys(said):  # each warning once, naming its model
        warnings.warn(f"{m.name}: {line}", stacklevel=3)
    res.config["zoo"].update(key=key, warnings=said)
    _io.check_run_folder(out)  # deleted while measuring: fail, do not re-create half a result
    res.save(path)
    outcome["seconds"] = res.config["zoo"]["seconds"]["total"]
    return res, outcome


def _hash(key: dict[str, Any]) -> str:
    from ..provenance import config_hash

    return config_hash(key)


def _measure_one(m: ZooModel, src, mcfg, n_test, device, progress: bool):
    from ..sensitivity import measure
    from ..sources import check_fits, resolve_model

    t0 = time.perf_counter()
    source = resolve_model(model=m.spec, model_seed=m.model_seed,
                           model_kwargs=m.model_kwargs)
    net = source.build(src)
    check_fits(net, m.name, src.probes, src.name, "choose a --data whose samples it takes")
    t1 = time.perf_counter()
    res = measure(net, src.probes, config=mcfg, device=device, progress=progress,
                  meta={**source.meta, **src.meta, "label": m.name})
    t2 = time.perf_counter()
    ev = classification_error(net, src.dataset, n=n_test, batch_size=mcfg.batch_size,
                              device=device, output=mcfg.output)
    t3 = time.perf_counter()
    res.config["zoo"] = {
        "label": m.name, "test_error": ev["error"], "test_error_se": ev["error_se"],
        "n_test": ev["n"], "error_reason": ev["reason"],
        "output_classes": ev["output_classes"], "data_classes": ev["data_classes"],
        "n_params": sum(p.numel() for p in net.parameters()),
        "seconds": {"build": t1 - t0, "measure": t2 - t1, "test": t3 - t2, "total": t3 - t0},
        "device": str(device)}
    return res


def _rows(res) -> Any:
    z = res.config["zoo"]
    df = res.table.copy()
    head = {"model": z["label"], "spec": res.config.get("model"),
            "model_seed": res.config.get("model_seed"), "data": res.config.get("data")}
    tail = {"test_error": z["test_error"], "test_error_se": z["test_error_se"],
            "n_test": z["n_test"], "error_reason": z["error_reason"] or "",
            "output_classes": z["output_classes"], "data_classes": z["data_classes"],
            "n_params": z["n_params"], "seconds": z["seconds"]["total"]}
    for k, v in {**head, **tail}.items():
        df[k] = math.nan if v is None else v
    return df


def _table(results: list) -> Any:
    import pandas as pd

    if not results:
        return pd.DataFrame(columns=ZOO_COLUMNS)
    df = pd.concat([_rows(r) for r in results], ignore_index=True)
    return df[[c for c in ZOO_COLUMNS if c in df]]


def _write_summary(out: Path, table, outcomes, src, mcfg, n_test, fmt, data) -> dict[str, Path]:
    from ..provenance import provenance

    meta = {"format": ZOO_FORMAT, "data": src.meta, "measure": dataclasses.asdict(mcfg),
            "n_test": n_test, "models": outcomes, "provenance": provenance()}
    _io.check_run_folder(out)
    files = {"summary": _io.write_json(out / "zoo.json", _io.to_jsonable(meta))}
    if len(table):
        files["table"] = _io.write_table(out / f"zoo.{fmt}", table, _io.to_jsonable(meta))
    return files


def _describe(o: dict[str, Any], res) -> str:
    if o["status"] == "failed":
        return f"  {o['model']}: failed ({o['seconds']:.1f} s): {o['error']}"
    row = res.table[(res.table.view == "full")].iloc[-1]
    z = res.config["zoo"]
    err = (f"test error {z['test_error']:.4f} of {z['n_test']}" if z["n_test"]
           else f"no test error: {z['error_reason']}")
    return (f"  {o['model']}: {o['status']} ({o['seconds']:.1f} s): {row.layer} D "
            f"{row.D:.3g} G {row.G:.3g} R {row.R:.3g} +- {row.R_se:.2g}; {err}")


def load_zoo(out: str | Path):
    """The table of a zoo folder (``zoo.csv``, ``.parquet`` or ``.json``), checked against
    its sidecar: ``(DataFrame, meta)``."""
    out = Path(out)
    found = [out / f"zoo.{s}" for s in ("csv", "parquet", "json") if (out / f"zoo.{s}").exists()]
    if not found:
        raise FileNotFoundError(f"no zoo.csv/.parquet/.json in {out}")
    numeric = ("D", "G", "R", "D_se", "G_se", "R_se", "num_D", "num_G", "denominator",
               "test_error", "test_error_se", "seconds")
    df, meta = _io.read_table(found[0], ZOO_COLUMNS, numeric, what="diffeosense zoo table",
                              dtype={"error_reason": str, "model": str, "layer": str})
    df["error_reason"] = df["error_reason"].fillna("")
    return df, meta
