"""Read a model's OV-circuit weights in one convention, whatever the architecture.

Row-vector convention: a token's one-hot ``x`` (1 x V) becomes the residual ``x W_E`` (1 x d); a
head reads values ``(r * g_in) W_V`` (d -> d_head) and writes ``v W_O`` (d_head -> d); logits are
``(r * g_f) W_U`` (d -> V). Definitional choices:

* Norm gains are folded in as diagonal scalings: the input norm of the layer (``g_in``), Gemma's
  post-attention norm (``g_post``, applied to the attention output before the residual add) and the
  final norm (``g_f``). The normalising division (RMS / standard deviation) is a positive scalar per
  position and is left out: it changes no sign, no eigenvalue ratio and no z-score. For RMSNorm the
  gain is read by evaluating the module on a vector of ones, which also covers Gemma's ``1 + w``
  parametrisation; for LayerNorm it is the weight (the mean-centring is ignored, as usual).
* Grouped-query attention: query head ``h`` uses the value matrix of kv group
  ``h // (n_heads / n_kv_heads)``.
* Gemma scales embeddings by ``sqrt(d)``: the embedding module's ``embed_scale`` is applied.
* Untied embeddings use ``lm_head`` and ``embed_tokens`` separately (tied ones are the same tensor).
* Biases (of the value and output projections) are left out: the OV circuit is the linear map.
* Norm modules by name: input ``input_layernorm`` / ``ln_1`` / ``self_attn_layer_norm`` (OPT), final
  ``norm`` / ``ln_f`` / ``final_layer_norm`` (GPT-NeoX; OPT's under ``decoder``).

Supported: Llama-family attention (``q/k/v/o_proj``: Llama, Gemma 1-3, Qwen2/3, Mistral, ...),
GPT-2 (``c_attn``/``c_proj``), GPT-NeoX / Pythia (fused ``query_key_value`` laid out per head as
``[q_h | k_h | v_h]``, output ``dense``, final norm ``final_layer_norm``) and Phi-3 (fused ``qkv_proj``
laid out as ``[Q (H * dh) | K (n_kv * dh) | V (n_kv * dh)]``). Other architectures raise
:class:`UnsupportedArchitecture`, which the scorers turn into NaN with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attendome.core.capture import _layer_list, attention_modules, base_model

__all__ = ["UnsupportedArchitecture", "OVWeights", "ov_weights", "norm_gain", "out_proj"]


class UnsupportedArchitecture(RuntimeError):
    """The model's attention layout is not one this module knows how to read."""


def norm_gain(mod: nn.Module | None, d: int) -> torch.Tensor:
    """Diagonal gain of a norm module as a ``(d,)`` vector (ones when there is no norm)."""
    if mod is None:
        return torch.ones(d)
    if isinstance(mod, nn.LayerNorm):
        return mod.weight.detach().float().cpu() if mod.weight is not None else torch.ones(d)
    w = next(mod.parameters(), None)
    dtype = w.dtype if w is not None else torch.float32
    device = w.device if w is not None else "cpu"
    with torch.no_grad():
        g = mod(torch.ones(1, d, dtype=dtype, device=device))  # RMS(ones) = 1 -> output = gain
    return g.reshape(d).detach().float().cpu()


def out_proj(attn: nn.Module) -> nn.Module:
    """The attention module's output projection (``o_proj`` or GPT-2's ``c_proj``)."""
    for name in ("o_proj", "c_proj", "out_proj", "dense"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise UnsupportedArchitecture(f"{type(attn).__name__} has no recognised output projection")


@dataclass
class OVWeights:
    """OV-circuit weights of every head, folded and in float32 on the CPU.

    Attributes:
        W_E: ``(V, d)`` token embedding (Gemma's scale applied).
        W_U: ``(d, V)`` unembedding with the final-norm gain folded in (rows scaled).
        W_V: per layer ``(n_heads, d, d_head)``, input-norm gain folded in, GQA expanded.
        W_O: per layer ``(n_heads, d_head, d)``, Gemma's post-attention gain folded in.
    """

    W_E: torch.Tensor
    W_U: torch.Tensor
    W_V: list[torch.Tensor]
    W_O: list[torch.Tensor]
    g_post: list[torch.Tensor]


def _heads_out(proj: nn.Module, n_heads: int, d_head: int) -> torch.Tensor:
    """``(n_heads, d_head, d)`` from an output projection (Linear or GPT-2 Conv1D)."""
    w = proj.weight.detach().float().cpu()
    if isinstance(proj, nn.Linear):  # (d, H*dh)
        return w.T.reshape(n_heads, d_head, -1)
    return w.reshape(n_heads, d_head, -1)  # Conv1D: (H*dh, d)


def _heads_value(attn: nn.Module, n_heads: int, n_kv: int, d_head: int, d: int) -> torch.Tensor:
    """``(n_heads, d, d_head)`` value maps, kv groups expanded to query heads."""
    if hasattr(attn, "v_proj"):
        w = attn.v_proj.weight.detach().float().cpu()  # (n_kv*dh, d)
        per_kv = w.reshape(n_kv, d_head, d).transpose(1, 2)  # (n_kv, d, dh)
        return per_kv.repeat_interleave(n_heads // n_kv, dim=0)
    if hasattr(attn, "query_key_value"):  # GPT-NeoX Linear (3d, d): rows per head [q_h | k_h | v_h]
        w = attn.query_key_value.weight.detach().float().cpu()
        return w.reshape(n_heads, 3, d_head, d)[:, 2].transpose(1, 2).contiguous()  # (H, d, dh)
    if hasattr(attn, "qkv_proj"):  # Phi-3 Linear ((H + 2 n_kv) dh, d): rows [Q | K | V]
        w = attn.qkv_proj.weight.detach().float().cpu()
        per_kv = w[(n_heads + n_kv) * d_head:].reshape(n_kv, d_head, d).transpose(1, 2)  # (n_kv, d, dh)
        return per_kv.repeat_interleave(n_heads // n_kv, dim=0)
    if hasattr(attn, "c_attn"):  # GPT-2 Conv1D (d, 3d): [Q | K | V]
        w = attn.c_attn.weight.detach().float().cpu()
        return w[:, 2 * d:].reshape(d, n_heads, d_head).permute(1, 0, 2)
    raise UnsupportedArchitecture(f"{type(attn).__name__}: value projection not recognised")


def ov_weights(lm) -> OVWeights:
    """Collect folded OV weights of every head of a causal LM.

    Raises:
        UnsupportedArchitecture: no LM head, or an attention layout this module cannot read.
    """
    model = lm.model
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise UnsupportedArchitecture("model has no unembedding (LM head)")
    if getattr(model.config, "do_layer_norm_before", True) is False:
        raise UnsupportedArchitecture("post-norm OPT (do_layer_norm_before=False): the norm gain acts after "
                                      "the attention, not on its input")
    body = base_model(model)
    emb = body.get_input_embeddings()
    d = emb.weight.shape[1]
    scale = float(getattr(emb, "embed_scale", 1.0))
    W_E = emb.weight.detach().float().cpu() * scale  # (V, d)
    decoder = getattr(body, "decoder", None)  # OPT keeps its layers and final norm one level down
    final_norm = (getattr(body, "norm", None) or getattr(body, "ln_f", None)
                  or getattr(body, "final_layer_norm", None) or getattr(decoder, "final_layer_norm", None))
    g_f = norm_gain(final_norm, d)
    W_U = lm_head.weight.detach().float().cpu().T * g_f[:, None]  # (d, V)
    layers = _layer_list(body)
    attns = attention_modules(body)
    W_V, W_O, G = [], [], []
    for layer, attn in zip(layers, attns):
        in_norm = (getattr(layer, "input_layernorm", None) or getattr(layer, "ln_1", None)
                   or getattr(layer, "self_attn_layer_norm", None))  # OPT
        g_in = norm_gain(in_norm, d)
        post = layer.post_attention_layernorm if hasattr(layer, "pre_feedforward_layernorm") else None
        g_post = norm_gain(post, d)
        wv = _heads_value(attn, lm.n_heads, lm.n_kv_heads, lm.d_head, d) * g_in[None, :, None]
        wo = _heads_out(out_proj(attn), lm.n_heads, lm.d_head) * g_post[None, None, :]
        W_V.append(wv)
        W_O.append(wo)
        G.append(g_post)
    return OVWeights(W_E=W_E, W_U=W_U, W_V=W_V, W_O=W_O, g_post=G)
