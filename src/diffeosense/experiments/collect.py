"""Every finished run under a folder, in one tidy table ready for pandas.

One row per (run, stage, copy, layer, view, channel). Columns, in order:

* ``run`` (the hash folder's name), ``stage`` (``init``, ``trained``, ``best``), ``copy``
  (-1: the net itself; k >= 0: its k-th channel-shuffled copy, ``RunConfig.shuffled``);
* the grid axes under short names: ``model``, ``dataset``, ``seed`` (training seed),
  ``noise`` (training noise), ``P``, ``epochs``, ``lr`` (None: the recipe's default);
* the run's outcome from its ``done`` marker: ``test_error``, ``train_error``, ``epochs_run``;
* the sensitivity table (:class:`~diffeosense.sensitivity.SensitivityResult`): ``layer, depth,
  kind, view, channel, D, G, R, D_se, G_se, R_se, num_D, num_G, denominator, n_probes, size``;
* the whole :class:`~diffeosense.experiments.run.RunConfig`, flattened: ``train.<field>``,
  ``train.data.<field>``, and the measurement fields as ``measure.<field>``; lists and dicts
  are JSON strings (so the table stores as CSV and Parquet alike).

Folders without a ``done`` marker (running, interrupted or failed runs) are left out;
:func:`unfinished_runs` names them (``diffeosense collect`` says how many and where).

>>> import tempfile
>>> collect(tempfile.mkdtemp()).empty
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._io import read_table, sidecar_path, write_table
from .run import load_run

__all__ = ["collect", "unfinished_runs", "save_table", "load_table", "ALIASES"]

ALIASES = {"model": "train.model", "dataset": "train.data.name", "seed": "train.seed",
           "noise": "train.data.noise", "P": "train.data.P", "epochs": "train.epochs",
           "lr": "train.lr"}
_FORMAT = "diffeosense.collect/2"  # /2: the sidecar holds the table record


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in ("train", "data"):
            out.update(_flatten(v, f"{key}."))
        elif isinstance(v, list | dict):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = v
    return out


def _config_columns(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    train = _flatten({"train": cfg_dict["train"]})
    measure = _flatten({k: v for k, v in cfg_dict.items() if k != "train"}, "measure.")
    return {**train, **measure}


def collect(root: str | Path):
    """The tidy table (``pandas.DataFrame``, columns in the module docstring) of every
    finished run in the folders below ``root``; empty when there are none."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no sweep folder {root}")
    frames = []
    for done in sorted(root.rglob("done")):
        if not (done.parent / "run_config.json").is_file():
            continue
        r = load_run(done.parent)
        cfg = _config_columns(r["config"].to_dict())
        head = {"run": done.parent.name}
        outcome = {k: r["done"].get(k) for k in ("test_error", "train_error", "epochs_run")}
        for name, res in r["tables"].items():
            t = res.to_frame()
            stage, copy = res.config.get("stage", name), res.config.get("copy", -1)
            lead = {**head, "stage": stage, "copy": copy, **{a: cfg[c] for a, c in ALIASES.items()}, **outcome}
            for i, (k, v) in enumerate(lead.items()):
                t.insert(i, k, [v] * len(t))
            for k, v in cfg.items():
                t[k] = [v] * len(t)
            frames.append(t)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def unfinished_runs(root: str | Path) -> list[tuple[Path, str]]:
    """The run folders below ``root`` that :func:`collect` leaves out: those with a
    ``run_config.json`` and no ``done`` marker, each with its status (``"partial"``: running
    or interrupted, ``"failed"``: its last attempt raised, see ``error.txt``), sorted.

    >>> import tempfile
    >>> unfinished_runs(tempfile.mkdtemp())
    []
    """
    from .run import run_status

    root = Path(root)
    return [(cfg.parent, run_status(cfg.parent))
            for cfg in sorted(root.rglob("run_config.json"))
            if not (cfg.parent / "done").is_file()]


def save_table(df, path: str | Path, root: str | Path | None = None) -> Path:
    """Write ``df`` to ``.csv`` or ``.parquet`` (atomic, :func:`diffeosense._io.write_table`)
    with a sidecar ``<stem>.meta.json``: the sweep ``root`` it was collected from, the number
    of runs, the column dtypes (from which :func:`load_table` restores it exactly),
    provenance, and the table's row count, columns and SHA-256 (checked on every read).

    A ``.csv`` and a ``.parquet`` of the same stem would share one sidecar, which vouches for
    one file only: give them different names."""
    from ..provenance import provenance

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"unknown table format {path.suffix!r}: use .csv or .parquet")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("writing Parquet needs pyarrow: pip install 'diffeosense[parquet]' "
                             "(or write .csv)") from None
    meta = {"format": _FORMAT, "root": str(root) if root is not None else None,
            "runs": int(df["run"].nunique()) if len(df) else 0,
            "dtypes": {c: str(t) for c, t in df.dtypes.items()},
            "provenance": provenance()}
    return write_table(path, df, meta)


def load_table(path: str | Path):
    """Read a table written by :func:`save_table` (CSV columns get their saved dtypes back;
    text columns keep ``None`` for missing values). A table that does not match its sidecar
    (truncated, edited, replaced) or was written before sidecars carried its row count and
    hash is refused with a ValueError naming it: collect it again."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no table {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"unknown table format {path.suffix!r}: use .csv or .parquet")
    side = sidecar_path(path)
    again = f"collect it again: diffeosense collect SWEEP_DIR --out {path}"
    try:
        meta = json.loads(side.read_text())
        dtypes = meta.get("dtypes", {})
    except (OSError, ValueError, AttributeError):
        meta, dtypes = None, {}  # missing or damaged: read_table says so, naming the file
    if isinstance(meta, dict) and "table" not in meta and meta.get("format") != _FORMAT:
        raise ValueError(f"{path} was collected by an older diffeosense: its sidecar "
                         f"{side.name} holds no row count and hash to check it against; {again}")
    # Text columns ("object"; "str" under pandas >= 3) are read as text: a run hash such as
    # "1e50" or "0012" must not come back as a number.
    text = {c for c, t in dtypes.items() if t in ("object", "str")}
    try:
        df, meta = read_table(path, dtype={c: str for c in text}, what="collected table")
    except ValueError as e:
        raise ValueError(f"{e} (a collected table: {again})") from None
    if suffix == ".csv":
        for c in text & set(df.columns):
            if dtypes[c] == "object":
                df[c] = df[c].astype(object).where(df[c].notna(), None)
        for c, t in dtypes.items():
            if c in df and t != "object" and str(df[c].dtype) != t:
                df[c] = df[c].astype(t)
    return df
