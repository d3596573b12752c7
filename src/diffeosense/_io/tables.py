"""Tidy result tables (CSV, JSON, Parquet) with a sidecar that vouches for them.

A CSV or Parquet table gets ``<stem>.meta.json`` beside it: its meta (config, provenance)
and a :func:`table_record` (file name, rows, columns, SHA-256). :func:`read_table` refuses a
table that does not match its record (truncated, edited, replaced) by name.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from . import atomic

__all__ = ["TABLE_SUFFIXES", "sidecar_path", "write_table", "read_table", "table_record",
           "check_table"]

TABLE_SUFFIXES = (".csv", ".json", ".parquet")


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<stem>.meta.json`` beside a ``.csv`` / ``.parquet`` table."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_table(path: str | os.PathLike, table, meta: dict[str, Any], *,
                two_phase: bool = False) -> Path:
    """Write a ``pandas.DataFrame`` as ``.csv``, ``.json`` or ``.parquet`` (atomic).

    CSV and Parquet get a sidecar ``<stem>.meta.json`` holding ``meta`` (format, config,
    provenance) and the table's :func:`table_record` (file, rows, columns, SHA-256), written
    after the table: it vouches for it. JSON holds everything:
    ``{**meta, "n_rows": N, "rows": [...]}`` with NaN written as null.

    ``two_phase``: for a table rewritten in place while a run goes on (and resumed after a
    kill), first write the sidecar holding both the table on disk (``"table"``) and the new
    one (``"pending_table"``), then the table, then the final sidecar. A kill between any two
    of these writes leaves a table that its sidecar vouches for, old or new; without it, a
    kill between the table and its sidecar leaves a pair that :func:`read_table` refuses.

    >>> import pandas as pd, tempfile
    >>> p = write_table(Path(tempfile.mkdtemp()) / "t.csv", pd.DataFrame({"a": [1, 2]}), {})
    >>> read_table(p)[0].a.tolist()
    [1, 2]
    """
    import math

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()} for r in table.to_dict("records")]
        return atomic.write_json(path, {**meta, "n_rows": len(rows), "rows": rows})
    if suffix == ".csv":
        data = table.to_csv(index=False).encode("utf-8")
    elif suffix == ".parquet":
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        raise ValueError(f"unknown result format {path.suffix!r}: use .csv, .json or .parquet")
    record = table_record(path, data, len(table), list(table.columns))
    side = sidecar_path(path)
    if two_phase:
        try:
            current = json.loads(side.read_text()).get("table") if path.exists() else None
        except (OSError, ValueError, AttributeError):
            current = None  # no readable sidecar: the table on disk is vouched for by nothing
        atomic.write_json(side, {**meta, "table": current, "pending_table": record})
    atomic.write_bytes(path, data)
    atomic.write_json(side, {**meta, "table": record})  # last: the commit point
    return path


def read_table(path: str | os.PathLike, columns: list[str] | None = None,
               numeric: tuple[str, ...] = (), what: str = "diffeosense result",
               dtype: dict[str, Any] | None = None):
    """Read a table written by :func:`write_table`: returns ``(DataFrame, meta)``.

    ``columns`` orders the rows of a JSON table; ``numeric`` columns are coerced to float
    (JSON nulls and empty CSV cells become NaN); ``dtype`` is handed to ``pandas.read_csv``
    (e.g. ``{"run": str}`` for text that looks like numbers). CSV floats are read back
    exactly. A CSV/Parquet table is refused (a ValueError naming it) when it does not match
    its sidecar's row count, columns and hash (truncated, edited, replaced), and a
    FileNotFoundError when it has no sidecar. A table matching the ``"pending_table"`` of a
    :func:`write_table` ``two_phase`` write killed before its final sidecar is the one that
    write meant: it is accepted.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            blob = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON (truncated?): {e}") from None
        if not isinstance(blob, dict) or "rows" not in blob:
            raise ValueError(f"{path} is not a {what} (no 'rows')")
        n = blob.get("n_rows", len(blob["rows"]))
        if n != len(blob["rows"]):
            raise ValueError(f"{path} holds {len(blob['rows'])} rows but says {n}: it was "
                             f"edited after it was written; re-run to write it again")
        df = pd.DataFrame.from_records(blob["rows"], columns=columns)
        meta = blob
    else:
        if suffix not in (".csv", ".parquet"):
            raise ValueError(f"unknown result format {path.suffix!r}: use .csv, .json or "
                             ".parquet")
        side = sidecar_path(path)
        if not side.exists():
            raise FileNotFoundError(
                f"{path} has no sidecar {side.name} (its config, row count and hash): a table "
                f"without it cannot be checked; re-run to write both"
            )
        try:
            meta = json.loads(side.read_text())
        except ValueError as e:
            raise ValueError(f"the sidecar {side} is not valid JSON ({e})") from None
        data = path.read_bytes()
        # pandas >= 3 reads CSV floats back exactly by default (and deprecates the option);
        # pandas 2 needs it: a table re-read and rewritten (a resumed run's) must not drift.
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
        try:
            df = (pd.read_csv(io.BytesIO(data), dtype=dtype, **exact) if suffix == ".csv"
                  else pd.read_parquet(io.BytesIO(data)))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - any parser error: a damaged table
            raise ValueError(f"{path} cannot be read as a table ({type(e).__name__}: {e}); "
                             f"re-run to write it again") from None
        check_table(path, data, len(df), list(df.columns), meta.get("table"), side,
                    pending=meta.get("pending_table"))
    for c in numeric:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df, meta




def table_record(path: str | os.PathLike, data: bytes, n_rows: int, columns: list) -> dict:
    """What a sidecar says of the table file ``path`` whose bytes are ``data``: its name,
    row count, columns and SHA-256 (checked by :func:`check_table` on every read).

    >>> table_record("t.csv", b"a\\n1\\n", 1, ["a"])["rows"]
    1
    """
    import hashlib

    return {"file": Path(path).name, "rows": int(n_rows), "columns": [str(c) for c in columns],
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def check_table(path: str | os.PathLike, data: bytes, n_rows: int, columns: list,
                record: dict | None, sidecar: str | os.PathLike, *,
                pending: dict | None = None) -> None:  # fmt: skip
    """Refuse a table that does not match its sidecar's :func:`table_record`: another file
    name, row count, columns or content hash (a truncated, edited or replaced table, or a
    sidecar left by another result). The ValueError names the table and the sidecar.

    ``pending``: the record of a :func:`write_table` ``two_phase`` write in progress; a table
    matching it exactly (name, rows, columns, hash) is accepted too."""
    import hashlib

    if pending is not None and pending == table_record(path, data, n_rows, columns):
        return  # the write in progress reached its table; only its final sidecar is missing
    if record is None:
        raise ValueError(
            f"the sidecar {sidecar} of {path} holds no table record (row count and content "
            f"hash): it was not written with {Path(path).name}; re-run the measurement"
        )
    problems = []
    if record.get("file") != Path(path).name:
        problems.append(f"it describes {record.get('file')!r}")
    if record.get("rows") != n_rows:
        problems.append(f"{n_rows} rows in the table, {record.get('rows')} in the sidecar")
    if record.get("columns") != [str(c) for c in columns]:
        problems.append("the columns differ")
    if record.get("sha256") != hashlib.sha256(data).hexdigest():
        problems.append("the content hash differs")
    if problems:
        raise ValueError(
            f"{path} does not match its sidecar {sidecar} ({'; '.join(problems)}): the table "
            f"was truncated, edited or replaced after it was written; re-run the measurement "
            f"or restore both files"
        )
