"""Whisper's text decoder as a causal LM: the CTranslate2 reader and the conditioned decoder.

Two Whisper speech models ship offline only as CTranslate2 ``model.bin`` files (the faster-whisper
format), which ``transformers`` cannot read. :func:`read_ctranslate2` parses that format (layout from
CTranslate2's ``python/ctranslate2/specs/model_spec.py``: little-endian; uint32 format version; spec
name and revision; the variables, each a NUL-padded name, rank, dims, dtype id and byte count before
its raw data; then the aliases), and :func:`whisper_state_dict` maps a ``WhisperSpec`` onto a
``WhisperForConditionalGeneration`` state dict. The conversion is checked by transcribing a spoken
sentence (``tests/integration/test_whisper.py``).

Definitional choices, made here once for every scorer and stage:

* **Only the decoder's self-attention heads are analysed.** The decoder is a causal text LM whose
  every layer also cross-attends to the audio encoder; :class:`ConditionedDecoder` fixes that
  conditioning to the encoder output of 30 s of digital silence (log-mel features of zeros), computed
  once at load time, so that a text prompt alone drives the decoder. The cross-attention heads are
  never hooked (:func:`attendome.core.capture.attention_modules` skips them).
* **The task prompt is the model's "BOS".** The tokenizer is saved with Whisper's own prefix:
  ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` for multilingual models,
  ``<|startoftranscript|><|notimestamps|>`` for English-only ones (``vocab_size < 51865``, the rule of
  ``transformers``), and ``<|endoftext|>`` after the text. The probes put whatever the tokenizer's
  template adds around the text (:func:`attendome.core.tokens.special_affixes`), so this prefix
  precedes every probe. Without it the decoder shows no head above 0.35 (design notes, section 1).
* The key projection has no bias (Whisper's convention); CTranslate2 stores a zero block in its
  place, which is dropped. The output projection is tied to the token embedding.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["CT2Model", "read_ctranslate2", "whisper_state_dict", "build_whisper_dir", "decoder_config",
           "ConditionedDecoder", "WhisperTextLM", "wrap_whisper", "WHISPER_NA"]

# dtype ids of the CTranslate2 format (version >= 4)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}

WHISPER_NA = {  # scorer -> why it is undefined for a Whisper text decoder (n/a rows carry this reason)
    "retrieval": "Whisper text decoder: its text positions (448 in every released Whisper) hold no retrieval "
                 "haystack, and free generation would need audio to transcribe: the score is undefined",
    "retrieval_tf": "Whisper text decoder: its text positions (448 in every released Whisper) hold no retrieval "
                    "haystack: the score is undefined",
}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """A parsed CTranslate2 model file.

    Attributes:
        version: format version (6 for current files).
        spec: spec name, e.g. ``WhisperSpec``.
        revision: spec revision.
        variables: name -> array (float16 kept as stored; bfloat16 as a torch tensor).
        aliases: alias name -> variable name (e.g. a tied projection).
    """

    version: int
    spec: str
    revision: int
    variables: dict[str, Any]
    aliases: dict[str, str]

    def get(self, name: str) -> Any:
        return self.variables[self.aliases.get(name, name)]


def read_ctranslate2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (format versions 1-6).

    Raises:
        CT2FormatError: truncated file, unknown dtype or trailing bytes.
    """
    data = memoryview(Path(path).read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise CT2FormatError(f"{path}: truncated at byte {pos}")
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = bytes(data[pos:pos + n])
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if not 1 <= version <= 6:
        raise CT2FormatError(f"{path}: CTranslate2 format version {version} is not one this reader knows (1-6)")
    spec, revision = "", 1
    if version >= 2:
        spec = string()
        (revision,) = take("I")
    (count,) = take("I")
    variables: dict[str, Any] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank) if rank else ()
        if version >= 4:
            dtype_id, nbytes = take("BI")
        else:  # version < 4: float32 only
            dtype_id, nbytes = 0, int(np.prod(dims, dtype=np.int64)) * 4
        if dtype_id not in _CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        if pos + nbytes > len(data):
            raise CT2FormatError(f"{path}: truncated inside variable {name!r}")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        dt = _CT2_DTYPES[dtype_id]
        if dt == "bfloat16":
            arr: Any = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(dims)
        else:
            arr = np.frombuffer(raw, dtype=dt).reshape(dims).copy()
        variables[name] = arr
    aliases: dict[str, str] = {}
    if version >= 3:
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias = string()
            aliases[alias] = string()
    if pos != len(data):
        raise CT2FormatError(f"{path}: {len(data) - pos} unexpected bytes after the last record")
    return CT2Model(version, spec, revision, variables, aliases)


def _t(arr: Any) -> torch.Tensor:
    return arr.float() if isinstance(arr, torch.Tensor) else torch.from_numpy(np.asarray(arr, dtype=np.float32))


def _scalar(ct2: CT2Model, name: str) -> int:
    return int(np.asarray(ct2.get(name)).reshape(-1)[0])


def _layers(ct2: CT2Model, part: str) -> int:
    return len({k.split("/")[1] for k in ct2.variables if re.match(rf"{part}/layer_\d+/", k)})


def whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``WhisperConfig`` keyword arguments and a ``WhisperForConditionalGeneration`` state dict.

    CTranslate2 names (``self_attention/linear_0`` = fused q|k|v, ``linear_1`` = output;
    ``attention/linear_0`` = cross query, ``linear_1`` = fused cross k|v, ``linear_2`` = output;
    ``layer_norm`` gamma/beta) map onto the ``transformers`` module names.

    Raises:
        CT2FormatError: not a ``WhisperSpec`` file, or one with pre-scaled queries.
    """
    if ct2.spec != "WhisperSpec":
        raise CT2FormatError(f"expected a WhisperSpec CTranslate2 model, got {ct2.spec!r}")
    if any(k.endswith("queries_scale") for k in ct2.variables):
        raise CT2FormatError("this WhisperSpec file pre-scales its queries; the reader does not undo that")
    sd: dict[str, torch.Tensor] = {}
    emb = _t(ct2.get("decoder/embeddings/weight"))  # (V, d)
    d = emb.shape[1]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _t(ct2.get(f"{src}/gamma"))
        sd[f"{dst}.bias"] = _t(ct2.get(f"{src}/beta"))

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _t(ct2.get(f"{src}/weight"))
        sd[f"{dst}.bias"] = _t(ct2.get(f"{src}/bias"))

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        w, b = _t(ct2.get(f"{src}/weight")), _t(ct2.get(f"{src}/bias"))  # (n*d, d), (n*d,)
        for i, name in enumerate(names):
            sd[f"{dst}.{name}.weight"] = w[i * d:(i + 1) * d].clone()
            if name != "k_proj":  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                sd[f"{dst}.{name}.bias"] = b[i * d:(i + 1) * d].clone()

    for part in ("encoder", "decoder"):
        for i in range(_layers(ct2, part)):
            src, dst = f"{part}/layer_{i}", f"model.{part}.layers.{i}"
            fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if part == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        norm(f"model.{part}.layer_norm", f"{part}/layer_norm")
        sd[f"model.{part}.embed_positions.weight"] = _t(ct2.get(f"{part}/position_encodings/encodings"))
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = emb
    sd["proj_out.weight"] = emb  # tied
    vocab = emb.shape[0]
    config = dict(
        vocab_size=vocab, d_model=d, num_mel_bins=int(sd["model.encoder.conv1.weight"].shape[1]),
        encoder_layers=_layers(ct2, "encoder"), decoder_layers=_layers(ct2, "decoder"),
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(sd["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(sd["model.decoder.embed_positions.weight"].shape[0]),
        tie_word_embeddings=True, scale_embedding=False, activation_function="gelu",
    )
    return config, sd


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("eos", "<|endoftext|>"), ("sot", "<|startoftranscript|>"), ("no_ts", "<|notimestamps|>"))}
    if any(v is None for v in ids.values()) or len(set(ids.values())) < 3:
        raise CT2FormatError(f"the tokenizer lacks Whisper's special tokens ({ids})")
    return ids


def build_whisper_dir(model_bin: Path, tokenizer_json: Path, out: Path) -> None:
    """Write a Hugging Face folder (config, safetensors, tokenizer with the task prompt) for a
    CTranslate2 Whisper model into ``out``."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperTokenizerFast

    kwargs, sd = whisper_state_dict(read_ctranslate2(model_bin))
    multilingual = kwargs["vocab_size"] >= 51865  # transformers' rule (WhisperForConditionalGeneration)
    lang = dict(language="en", task="transcribe") if multilingual else {}
    tok = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), predict_timestamps=False, **lang)
    ids = _special_ids(tok)
    config = WhisperConfig(**kwargs, bos_token_id=ids["eos"], eos_token_id=ids["eos"], pad_token_id=ids["eos"],
                           decoder_start_token_id=ids["sot"])
    config.save_pretrained(out)
    sd = {k: v.contiguous() for k, v in sd.items() if k != "proj_out.weight"}  # tied: saved once
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(out)
    (out / "attendome_conversion.json").write_text(json.dumps(
        dict(converted_from="CTranslate2 WhisperSpec", multilingual=multilingual,
             prompt=tok.convert_ids_to_tokens(tok.prefix_tokens)), indent=1) + "\n")


def decoder_config(config):
    """The text decoder's geometry as a plain config (layers, heads, width, positions)."""
    from transformers import PretrainedConfig

    heads = config.decoder_attention_heads
    return PretrainedConfig(
        num_hidden_layers=config.decoder_layers, num_attention_heads=heads, num_key_value_heads=heads,
        hidden_size=config.d_model, head_dim=config.d_model // heads, vocab_size=config.vocab_size,
        max_position_embeddings=config.max_target_positions, intermediate_size=config.decoder_ffn_dim,
        is_decoder=True, tie_word_embeddings=True,
    )


class ConditionedDecoder(nn.Module):
    """Whisper's decoder with its cross-attention fixed to one encoder output (the transformer body).

    Called like a causal LM's body: ``forward(input_ids, attention_mask)`` returns the decoder's
    output (``last_hidden_state``: ``(batch, T, d)``).
    """

    def __init__(self, decoder: nn.Module, conditioning: torch.Tensor, config) -> None:
        super().__init__()
        self.decoder = decoder
        self.norm = decoder.layer_norm  # the final norm, where the OV-circuit reader looks for it
        self.register_buffer("conditioning", conditioning, persistent=False)  # (1, frames, d)
        self.config = config

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embed_tokens

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        enc = self.conditioning.expand(input_ids.shape[0], -1, -1)  # (batch, frames, d)
        kwargs.pop("use_cache", None)
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=enc,
                            use_cache=False, **kwargs)


class WhisperTextLM(nn.Module):
    """The conditioned decoder plus Whisper's (tied) output projection: a causal LM over text."""

    base_model_prefix = "body"

    def __init__(self, body: ConditionedDecoder, proj_out: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.proj_out = proj_out
        self.config = body.config

    def get_output_embeddings(self) -> nn.Module:
        return self.proj_out

    def get_input_embeddings(self) -> nn.Module:
        return self.body.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        from transformers.modeling_outputs import CausalLMOutput

        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return CausalLMOutput(logits=self.proj_out(hidden))  # (batch, T, V)


@torch.no_grad()
def silence_conditioning(model) -> torch.Tensor:
    """Encoder output of 30 s of digital silence, ``(1, frames, d)``."""
    from transformers import WhisperFeatureExtractor

    cfg = model.config
    fe = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
    feats = fe(np.zeros(fe.n_samples, dtype=np.float32), sampling_rate=fe.sampling_rate,
               return_tensors="pt").input_features  # (1, mel, 3000)
    p = next(model.parameters())
    return model.model.encoder(feats.to(device=p.device, dtype=p.dtype)).last_hidden_state


def wrap_whisper(model) -> WhisperTextLM:
    """A loaded ``WhisperForConditionalGeneration`` as a text LM conditioned on silence (the encoder
    runs once here and is then dropped)."""
    cond = silence_conditioning(model)
    body = ConditionedDecoder(model.model.decoder, cond, decoder_config(model.config))
    lm = WhisperTextLM(body, model.proj_out)
    lm.eval()
    return lm
