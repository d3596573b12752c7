"""The package's file handling, in three parts: atomic writes and JSON (:mod:`.atomic`),
checked result tables (:mod:`.tables`) and run-folder locks (:mod:`.locks`). Everything is
re-exported here: ``from diffeosense import _io; _io.write_table(...)``."""

from .atomic import (
    atomic_write,
    dataclass_from_dict,
    to_jsonable,
    torch_save,
    write_bytes,
    write_json,
    write_text,
)
from .locks import (
    LOCK_NAME,
    RunFolderBusy,
    RunLock,
    check_output_path,
    check_run_folder,
    clean_stale_temporaries,
    made_folder,
    run_lock,
)
from .tables import (
    TABLE_SUFFIXES,
    check_table,
    read_table,
    sidecar_path,
    table_record,
    write_table,
)

__all__ = [
    "atomic_write", "write_bytes", "write_text", "write_json", "torch_save", "to_jsonable",
    "dataclass_from_dict", "write_table", "read_table", "sidecar_path", "TABLE_SUFFIXES",
    "run_lock", "RunLock", "RunFolderBusy", "LOCK_NAME", "clean_stale_temporaries",
    "check_run_folder", "table_record", "check_table", "check_output_path", "made_folder",
]
