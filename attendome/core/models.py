"""Loading models: a catalogue key (or any Hugging Face id) to a :class:`LoadedModel` with its
attention geometry, in eval mode, with eager attention.

Where the weights come from is :mod:`attendome.core.sources` (the source registry); the user cache
that keeps assembled and dequantized weights honest is :mod:`attendome.core.cache`. Definitional
choices:

* Attention is always loaded with ``attn_implementation="eager"``: the scorers need the attention
  probabilities, which fused kernels never materialise.
* Models of a control source (``random_init``) copy the config and tokenizer of their ``base`` and
  draw weights from the architecture's initialiser under ``init_seed``: the negative control.
  ``random_config`` models take their architecture from the spec's ``config`` instead (any family
  ``transformers`` knows, at any size) and their tokenizer from ``base``.
* Whisper (encoder-decoder) is loaded as its text decoder conditioned on the encoder output of
  silence (:mod:`attendome.core.whisper`); its geometry is the decoder's. Other encoder-decoder
  models are refused with a clear error.
"""

from __future__ import annotations

import gc
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attendome.core.cache import ModelUnavailableError
from attendome.core.params import ModelSpec, Params, ParamsError
from attendome.core.sources import get_source, origin, quiet_transformers, resolve_weights

__all__ = ["ModelUnavailableError", "LoadedModel", "load_model", "load_config", "load_tokenizer",
           "ENCODER_MODEL_TYPES", "config_is_causal", "spec_key", "params_for_name", "check_params_against_config"]

ENCODER_MODEL_TYPES = {
    "bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "albert",
    "deberta", "deberta-v2", "modernbert", "camembert", "nomic_bert",
}


def config_is_causal(config) -> bool:
    """Whether a (text) config describes a causal model: not an encoder architecture, and not a decoder
    architecture switched to bidirectional attention (``use_bidirectional_attention``, e.g.
    EmbeddingGemma, a Gemma 3 text model used as an encoder)."""
    return (getattr(config, "model_type", "") not in ENCODER_MODEL_TYPES
            and not getattr(config, "use_bidirectional_attention", False))


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
        unsupported: scorer name -> why that score is undefined for this model (beyond the scorer
            registry's own rules, e.g. retrieval in Whisper's 448-position decoder).
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
    unsupported: dict[str, str] = field(default_factory=dict)

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
    if getattr(config, "model_type", "") == "whisper":  # the text decoder's geometry
        from attendome.core.whisper import decoder_config

        return decoder_config(config)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def load_config(key: str, params: Params):
    """The model's ``transformers`` config (for ``random_init`` that of its base; for ``random_config``
    built from the spec's ``config``, ``vocab_size`` defaulting to the base tokenizer's size), with the
    path and keywords its tokenizer loads from."""
    from transformers import AutoConfig

    src_key, src_spec = origin(key, params)
    if get_source(src_spec.source).online:
        _hub_check(src_spec.hf_id, params)
    path, kw = resolve_weights(src_key, src_spec)
    spec = params.model(key)
    if spec.config is not None:  # random_config: the architecture from its config, the base's tokenizer
        cfg = dict(spec.config)
        try:
            config = AutoConfig.for_model(**cfg)
        except (ValueError, TypeError) as err:
            raise ParamsError(f"invalid params.yaml:\n  catalog.{key}.config: {err}") from None
        if "vocab_size" not in cfg:
            from transformers import AutoTokenizer

            n_tok = len(AutoTokenizer.from_pretrained(path, **kw))
            for c in {id(config): config, id(_text_config(config)): _text_config(config)}.values():
                if hasattr(c, "vocab_size"):
                    c.vocab_size = n_tok
        return config, path, kw
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

    src_key, src = origin(key, params)
    path, kw = resolve_weights(src_key, src)  # the same verified files the model loads from
    return AutoTokenizer.from_pretrained(path, trust_remote_code=src.trust_remote_code, **kw)


def load_model(key: str, params: Params) -> LoadedModel:
    """Load model ``key`` from ``params.models`` with eager attention, in eval mode.

    Raises:
        ParamsError: unknown key.
        ModelUnavailableError: weights missing or failing verification (says what to install).
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    spec = params.model(key)
    config, path, kw = load_config(key, params)
    tcfg = _text_config(config)
    whisper = getattr(config, "model_type", "") == "whisper"
    if getattr(config, "is_encoder_decoder", False) and not whisper:
        raise ModelUnavailableError(f"model {key!r}: encoder-decoder models other than Whisper are not supported "
                                    f"(model_type {config.model_type!r})")
    is_causal = config_is_causal(tcfg)
    _, src_spec = origin(key, params)
    if src_spec.trust_remote_code:
        warnings.warn(f"model {key!r}: trust_remote_code is true: Python code shipped with {path!r} will run "
                      "with your permissions; set it only for code you have read")
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=src_spec.trust_remote_code, **kw)
    vocab = getattr(tcfg, "vocab_size", None) or getattr(config, "vocab_size", None)
    if spec.config is not None and vocab is not None and vocab < len(tok):
        raise ParamsError(f"invalid params.yaml:\n  catalog.{key}.config.vocab_size: {vocab}, but the tokenizer of "
                          f"{spec.base!r} has {len(tok)} tokens")
    cls = AutoModelForCausalLM if is_causal else AutoModel
    if whisper:
        from transformers import WhisperForConditionalGeneration

        cls = WhisperForConditionalGeneration
    load_kw: dict[str, Any] = dict(attn_implementation="eager", trust_remote_code=src_spec.trust_remote_code)
    if get_source(spec.source).control:
        torch.manual_seed(spec.init_seed)
        model = (cls._from_config(config, attn_implementation="eager") if whisper
                 else cls.from_config(config, **load_kw))
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
    unsupported: dict[str, str] = {}
    if whisper:
        from attendome.core.whisper import WHISPER_NA, wrap_whisper

        model, unsupported = wrap_whisper(model), dict(WHISPER_NA)
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
        unsupported=unsupported,
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
    config, _, _ = load_config(key, params)
    tcfg = _text_config(config)
    positions = getattr(tcfg, "max_position_embeddings", None)
    if heads and positions:
        pp, rp = params.heads.probe, params.heads.retrieval
        whisper = getattr(config, "model_type", "") == "whisper"
        # two copies plus the template's affixes: at most one token each side, Whisper's task prompt 4 + 1
        n = 2 * pp.seq_len + (5 if whisper else 2)
        if n > positions:
            raise ParamsError(f"invalid params.yaml:\n  heads.probe.seq_len: {pp.seq_len} makes {n}-token sequences, "
                              f"beyond the {positions} positions of model {key!r}")
        # retrieval is undefined (n/a rows with the reason) in encoders and in Whisper's text decoder
        encoder = getattr(tcfg, "model_type", "") in ENCODER_MODEL_TYPES or whisper
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
