"""Capture attention probabilities layer by layer with forward hooks.

Only the layers asked for are hooked, and each layer's ``(batch, heads, query, key)`` probabilities
are handed to a callback that reduces them at once (e.g. to per-sequence scores) and drops them, so
memory stays bounded by one layer's attention, whatever the depth of the model. Requires the model
to be loaded with ``attn_implementation="eager"`` (fused kernels never form the probabilities).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

__all__ = ["attention_modules", "base_model", "capture_attention"]


def base_model(model: nn.Module) -> nn.Module:
    """The transformer body without the LM head (its logits are not needed for head analysis)."""
    prefix = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix, None) if prefix else None
    return inner if isinstance(inner, nn.Module) else model


_CROSS = ("encoder_attn", "crossattention", "cross_attn", "EncDecAttention")  # names of cross-attention modules


def _layer_list(model: nn.Module) -> nn.ModuleList:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = cfg.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and any(
            "Attention" in type(m).__name__ for m in mod[0].modules()
        ):
            return mod
    raise RuntimeError(f"could not find the {n} transformer layers of {type(model).__name__}")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """One self-attention module per layer, in layer order.

    Per layer, the innermost module whose class name contains ``Attention`` (e.g.
    ``LlamaAttention``, ``GPT2Attention``, ``BertSelfAttention``); its forward returns
    ``(output, attention_probabilities)`` in ``transformers`` 5. Cross-attention modules (Whisper's
    ``encoder_attn``, GPT-2's ``crossattention``) are never chosen: only self-attention heads are
    analysed.
    """
    mods = []
    for layer in _layer_list(model):
        found = [m for name, m in layer.named_modules()
                 if "Attention" in type(m).__name__ and "Output" not in type(m).__name__
                 and not any(c in name for c in _CROSS)]
        if not found:
            raise RuntimeError(f"no attention module in layer {type(layer).__name__}")
        mods.append(found[-1])
    return mods


@contextmanager
def capture_attention(
    model: nn.Module,
    callback: Callable[[int, torch.Tensor], None],
    layers: Sequence[int] | None = None,
) -> Iterator[None]:
    """Call ``callback(layer, attn)`` with each hooked layer's attention during forward passes.

    Args:
        model: a ``transformers`` model loaded with eager attention.
        callback: receives the layer index and ``attn`` of shape ``(batch, heads, query, key)``.
        layers: layer indices to hook (default: all).
    """
    mods = attention_modules(model)
    chosen = range(len(mods)) if layers is None else layers
    handles = []

    def make_hook(idx: int):
        def hook(_mod, _inp, out):
            attn = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if attn is None:
                raise RuntimeError(
                    "attention probabilities were not returned: load the model with "
                    'attn_implementation="eager"'
                )
            callback(idx, attn.detach())

        return hook

    def ask_for_probs(_mod, args, kwargs):
        # modules that return their probabilities only when asked (e.g. MPNet's self-attention)
        kwargs["output_attentions"] = True
        return args, kwargs

    try:
        for i in chosen:
            if "output_attentions" in inspect.signature(mods[i].forward).parameters:
                handles.append(mods[i].register_forward_pre_hook(ask_for_probs, with_kwargs=True))
            handles.append(mods[i].register_forward_hook(make_hook(i)))
        yield
    finally:
        for h in handles:
            h.remove()
