"""Evidence that travels with every result: config, seed, versions, hardware, command.

>>> info = provenance()
>>> sorted(info)[:3]
['argv', 'commit', 'cuda']
>>> len(config_hash({"a": 1, "b": [2, 3]}))
12
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ._io import to_jsonable

__all__ = ["provenance", "config_hash", "git_commit"]


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package), or None."""
    here = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Versions, threads, hardware, time and the command line of the current process."""
    import numpy as np

    from . import __version__

    return {
        "argv": list(sys.argv),
        "commit": git_commit(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "diffeosense": __version__,
        "hostname": platform.node(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }


def config_hash(config: Any, length: int = 12) -> str:
    """A short stable hash of a config (dataclass, dict, ...): names a run's output folder.

    Key order does not matter; the same config always gives the same folder, so a
    re-run finds its finished result.
    """
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
