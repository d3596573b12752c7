"""Shared by the tests of every table writer: a table changed after it was written is refused,
by name (``diffeosense._io.write_table`` / ``read_table`` and their sidecar record)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def assert_tampering_refused(path: str | Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` raises a ValueError naming ``path`` once the table is truncated (a CSV
    loses its last row, a Parquet file its second half) and once it is edited (one digit of
    a CSV's last row, one byte of a Parquet file's middle); restored, it reads again.
    Returns what ``read`` returns on the restored file."""
    path = Path(path)
    good = path.read_bytes()
    if path.suffix.lower() == ".csv":
        lines = good.decode().splitlines(keepends=True)
        assert len(lines) >= 3, f"{path}: the check needs a table of 2 rows or more"
        head, last = "".join(lines[:-1]), lines[-1]
        i = next(i for i, ch in enumerate(last) if ch.isdigit())
        damaged = {"truncated": head.encode(),
                   "edited": (head + last[:i] + str((int(last[i]) + 1) % 10)
                              + last[i + 1:]).encode()}
    else:
        mid = len(good) // 2
        damaged = {"truncated": good[:mid],
                   "edited": good[:mid] + bytes([good[mid] ^ 0xFF]) + good[mid + 1:]}
    for how, data in damaged.items():
        assert data != good, how
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            read(path)
    path.write_bytes(good)
    return read(path)
