"""The user cache of assembled and derived weights, and how it is kept honest.

* Everything lives under :func:`cache_dir` (``$ATTENDOME_CACHE`` or the platform's user cache).
* Every derived directory carries a manifest (sha256 and size of each file and the ``source`` it was
  built from), checked on every use; a directory that does not match is rebuilt, never loaded.
* Builds happen in a temporary sibling and are renamed into place; an exclusive lock per entry makes
  parallel stages wait instead of building twice. A build that runs out of space is removed and
  raises :class:`attendome.core.io.DiskFullError` naming the cache directory.
* A cache entry holds regular files only: a symbolic link inside it (or an entry that is itself a
  link) is never followed; the entry is rebuilt, so nothing outside the cache is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["ModelUnavailableError", "MANIFEST", "cache_dir", "sha256_file", "cache_lock", "remove_stale",
           "atomic_dir", "write_manifest", "check_manifest", "verified_dir", "tree_sha256", "symlinks_in"]

MANIFEST = "attendome-manifest.json"


class ModelUnavailableError(RuntimeError):
    """Weights cannot be found or fail verification; the message says how to get them."""


def cache_dir() -> Path:
    """User cache for assembled and dequantized weights (``$ATTENDOME_CACHE`` overrides)."""
    env = os.environ.get("ATTENDOME_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("attendome"))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock on one cache entry while it is checked or built (parallel stages wait)."""
    import fcntl

    d = cache_dir() / ".locks"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelUnavailableError(f"the model cache {cache_dir()} is not writable ({err}); set ATTENDOME_CACHE "
                                    "to a writable directory") from None
    with open(d / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale(final: Path) -> None:
    """Remove leftovers of an interrupted build of ``final`` (temporary ``.<name>.*`` siblings)."""
    if final.parent.exists():
        for p in final.parent.glob(f".{final.name}.*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def atomic_dir(final: Path) -> Path:
    """A temporary sibling directory to build ``final`` in (renamed into place when done)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def write_manifest(directory: Path, source: dict) -> dict:
    """Record sha256 and size of every file under ``directory`` and the ``source`` it was built from."""
    files = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            files[f.relative_to(directory).as_posix()] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    manifest = {"source": source, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def symlinks_in(root: Path) -> list[Path]:
    """``root`` itself if it is a symbolic link, else every symbolic link below it (not followed)."""
    if root.is_symlink():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not descend into linked folders
        found += [Path(dirpath) / n for n in dirnames + filenames if (Path(dirpath) / n).is_symlink()]
    return sorted(found)


def check_manifest(directory: Path, source: dict) -> str:
    """Why ``directory`` cannot be used ('' when it matches its manifest and comes from ``source``)."""
    links = symlinks_in(directory)
    if links:
        return f"holds a symbolic link ({links[0]} -> {os.readlink(links[0])}); a cache entry holds regular files only"
    mpath = directory / MANIFEST
    if not mpath.exists():
        return "no manifest (an interrupted or foreign build)"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("source") != source:
        return f"built from {manifest.get('source')}, expected {source}"
    files = manifest.get("files") or {}
    present = {f.relative_to(directory).as_posix() for f in directory.rglob("*") if f.is_file() and f.name != MANIFEST}
    if set(files) != present:
        return f"files differ from the manifest ({sorted(set(files) ^ present)[:3]})"
    for rel, rec in files.items():
        f = directory / rel
        if f.stat().st_size != rec["size"]:
            return f"{rel}: size {f.stat().st_size} != {rec['size']}"
        if sha256_file(f) != rec["sha256"]:
            return f"{rel}: sha256 differs from the manifest (modified or corrupt)"
    return ""


def verified_dir(name: str, final: Path, source: dict, build, key: str) -> Path:
    """``final`` if it verifies against its manifest, else rebuilt by ``build(tmp_dir)`` (atomically)."""
    with cache_lock(name):
        if final.exists():
            problem = check_manifest(final, source)
            if not problem:
                return final
            warnings.warn(f"model {key!r}: cached {final} is not usable ({problem}); rebuilding it")
            final.unlink() if final.is_symlink() else shutil.rmtree(final)
        tmp = atomic_dir(final)
        try:
            try:
                build(tmp)
                write_manifest(tmp, source)
                os.replace(tmp, final)
            except Exception as err:
                from attendome.core.io import disk_full_error, no_space

                if no_space(err):
                    raise disk_full_error(err, final, tmp, hint=" or set ATTENDOME_CACHE to a disk with room "
                                          f"(model {key!r})") from None
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final


def tree_sha256(directory: Path) -> str:
    """One hash of a whole directory: sha256 over the sorted lines ``<relative path>\t<sha256 of the file>``
    of every file in it (byte-code caches excluded)."""
    lines = []
    for f in sorted(directory.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            lines.append(f"{f.relative_to(directory).as_posix()}\t{sha256_file(f)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
