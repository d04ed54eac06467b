"""Trained predictors back from their files, to show what they predict.

``models/cloners/<model>.safetensors`` and ``models/universal.safetensors`` hold every replicate's
parameters (``s<i>.<name>``) but not the fixed absolute-position basis, which is a function of the
training prompts (:func:`attendome.clone.positional.positional_basis`); it is recomputed here from
the same training data, exactly as training computed it, so a reloaded predictor gives the held-out
KL that its stage recorded (``tests/integration/test_explorer.py`` checks this).
"""

from __future__ import annotations

import torch

from attendome.clone.data import SegmentData, pad_batch
from attendome.clone.model import BilinearCloner
from attendome.clone.positional import positional_basis
from attendome.core.io import load_tensors
from attendome.space.universal import UniversalEncoder
from attendome.core.params import EmbedParams, TrainParams

__all__ = ["load_cloner", "load_universal", "predict_attention"]


def _replicate(weights: dict[str, torch.Tensor], replicate: int) -> dict[str, torch.Tensor]:
    pre = f"s{replicate}."
    out = {k[len(pre):]: v for k, v in weights.items() if k.startswith(pre)}
    if not out:
        raise KeyError(f"no replicate {replicate} in the predictor file")
    return out


def load_cloner(path: str, train: SegmentData, tp: TrainParams, replicate: int = 0) -> BilinearCloner:
    """Replicate ``replicate`` of one model's cloners (``tp``: the ``clone`` params they were trained with)."""
    weights, _ = load_tensors(path)
    state = _replicate(weights, replicate)
    n_heads, d_in, rank = state["Q"].shape
    basis = positional_basis([train], tp.position_components, tp.position_eps) if tp.position_components else None
    model = BilinearCloner(n_heads, d_in, rank, 0, tp.max_offset, tp.prev_keys, basis, tp.match_terms)
    model.load_state_dict(state, strict=False)  # the basis buffers come from the training data
    return model.eval()


def load_universal(path: str, trains: dict[str, SegmentData], tp: EmbedParams, replicate: int = 0) -> UniversalEncoder:
    """Replicate ``replicate`` of the universal encoder; ``trains`` is every model's training data, in
    the order the encoder was trained on (``params.models``)."""
    weights, _ = load_tensors(path)
    state = _replicate(weights, replicate)
    counts = {k: int(state[f"emb.{k}"].shape[0]) for k in trains}
    d_in, rank = state["Q0"].shape
    dim = state["Qb"].shape[0]
    basis = None
    if tp.position_components:
        mu, B, coef = positional_basis(list(trains.values()), tp.position_components, tp.position_eps)
        sizes = torch.tensor([0] + list(counts.values())).cumsum(0).tolist()
        basis = (mu, B, {k: coef[a:b] for k, a, b in zip(counts, sizes[:-1], sizes[1:])})
    shared_rank = state["WQ"].shape[1] if "WQ" in state else 0  # the sizes come from the file itself
    shared_hidden = state["F1.weight"].shape[0] if "F1.weight" in state else 0
    enc = UniversalEncoder(counts, d_in, rank, dim, tp.max_offset, 0, tp.prev_keys, basis, tp.match_terms,
                           shared_rank, shared_hidden)
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("pos_")]:
        raise ValueError(f"universal encoder file does not match its params: missing {missing}, "
                         f"unexpected {unexpected}")
    return enc.eval()


@torch.no_grad()
def predict_attention(predict, data: SegmentData, index: int) -> torch.Tensor:
    """``(H, S, S + 1)`` attention probabilities of every head on prompt ``index`` of ``data``
    (``predict``: ``Batch -> (B, H, S, S + 1)`` log-probabilities); invalid cells are 0."""
    b = pad_batch(data, [index])
    return predict(b)[0].exp() * b.valid[0][None]
