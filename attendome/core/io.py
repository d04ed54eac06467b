"""Atomic, pickle-free writers and checked readers.

Every output is written to a temporary file ``.<name>.<random>.tmp`` in the target directory and
renamed into place, so an interrupted stage never leaves a half file that DVC would accept; stale
temporary siblings of a killed earlier write are removed before the next write, and ``.dvcignore``
hides them from DVC meanwhile. Formats: parquet, JSON,
safetensors, PNG (no pickle anywhere a user loads).

A write that fails for lack of space (a full disk, a quota, a file-size limit) removes its
temporary file and raises :class:`DiskFullError`, which names the directory, the space free there
and the bytes the file had reached (it needs more than that).
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd

if TYPE_CHECKING:
    import torch

__all__ = [
    "DataError",
    "MissingDataError",
    "CorruptDataError",
    "DiskFullError",
    "no_space",
    "disk_full_error",
    "atomic_path",
    "write_parquet",
    "read_parquet",
    "write_json",
    "read_json",
    "to_jsonable",
    "save_tensors",
    "load_tensors",
]


class DataError(Exception):
    """A pipeline input is missing or unreadable; the message names the file and the fix."""


class MissingDataError(DataError, FileNotFoundError):
    """An input file does not exist (its stage has not run)."""


class CorruptDataError(DataError, ValueError):
    """An input file exists but cannot be read."""


class DiskFullError(DataError, OSError):
    """A write failed for lack of space; nothing half-written was kept. The message names the
    directory, the space free there and the size the write had reached."""


# errno of "no space": a full disk, a full quota, a file-size limit (ulimit -f)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def no_space(err: BaseException) -> bool:
    """Whether ``err`` says a write ran out of space (an ``OSError`` with that errno, or a library's
    own error that carries the OS message, e.g. safetensors' ``SafetensorError``)."""
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return True
    return any(t in str(err) for t in _NO_SPACE_TEXT)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def disk_full_error(err: BaseException, target: Path, partial: Path, hint: str = "") -> DiskFullError:
    """A :class:`DiskFullError` for writing ``target``; ``partial`` is what had been written (a file or
    a folder, measured before it is removed)."""
    import shutil

    where = target.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    reached = _size(partial)
    reason = next((t for t in _NO_SPACE_TEXT if t in str(err)), str(err))
    return DiskFullError(
        f"no space to write {target} ({reason}): {free / 1e6:.1f} MB free in {where}, and the write needs more "
        f"than the {reached / 1e6:.1f} MB it had reached. Free space there{hint}, then rerun; nothing "
        "half-written was kept")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success (a write
    that runs out of space raises :class:`DiskFullError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed earlier write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
            os.replace(tmp, path)
        except Exception as err:
            if no_space(err):
                raise disk_full_error(err, path, Path(tmp)) from None
            raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` to parquet atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a parquet file; a missing or corrupt file gets an error that names it."""
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"{path} not found: run the stage that produces it (dvc repro)")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise CorruptDataError(
            f"{path} is not a readable parquet file ({err}); delete it and rerun dvc repro"
        ) from None


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pandas scalars and containers to plain JSON types (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON atomically (NaN becomes null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON; a missing or corrupt file gets an error that names it."""
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"{path} not found: run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptDataError(f"{path} is not valid JSON ({err}); delete it and rerun dvc repro") from None


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to safetensors atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata or {})


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a missing or corrupt file gets an error that names it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"{path} not found: run the stage that produces it (dvc repro)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as err:
        raise CorruptDataError(
            f"{path} is not a readable safetensors file ({err}); delete it and rerun dvc repro"
        ) from None
