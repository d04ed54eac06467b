"""Copying heads: a weights-only score (OV-circuit eigenvalues) and a behavioural one.

``copying_ov`` (Elhage et al. 2021): the head's OV circuit ``M = W_E W_V W_O W_U`` (vocab x vocab)
maps a token to the logits the head writes when it attends to it. A copying head raises the logit
of the attended token itself, so M has mostly positive eigenvalues. Score
``sum(lambda) / sum(|lambda|)`` in [-1, 1]: +1 all positive (pure copying), -1 all negative
(anti-copying / suppression), near 0 for random weights. The nonzero eigenvalues of M are those of
the ``d_head x d_head`` matrix ``W_O (W_U W_E) W_V``, which is what is decomposed (never the vocab x
vocab one).

``copying`` (behavioural, Olsson et al. 2022): on the repeated-random-token probe, for each query
of the second copy take the content token the head attends to most (argmax over keys, BOS
excluded: it is an attention sink and not a copy target). The head's own output at that query,
``o = sum_j A[i, j] v_j W_O``, pushed through the final-norm gain and the unembedding, gives the
head's direct logits ``u = o W_U``. Score = mean over queries and sequences of the z-score of the
attended token's logit within ``u``: ``(u_t - mean(u)) / std(u)`` over the vocabulary. Range
(-inf, inf); 0 = no preference for the attended token, positive = copying (a z of 3 puts the token
in roughly the top 0.1 % of the vocabulary for Gaussian logits), negative = suppression. The
positive per-position normalisation of RMS/LayerNorm is left out (a z-score is invariant to it).
The mean and variance over the vocabulary are computed exactly from the unembedding's row mean and
covariance, so the vocab-sized logit vector is never formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attendome.atlas import registry as S
from attendome.atlas.circuits import OVWeights, UnsupportedArchitecture, ov_weights
from attendome.atlas.rows import nan_rows

__all__ = ["ov_eigen_scores", "copying_ov", "CopyingContext", "copying"]


def ov_eigen_scores(ov: OVWeights) -> np.ndarray:
    """``(n_layers, n_heads)`` eigenvalue copying scores from folded OV weights."""
    C = (ov.W_U @ ov.W_E).double()  # (d, d) = W_U W_E, computed once (float32 matmul over the vocab)
    out = []
    for wv, wo in zip(ov.W_V, ov.W_O):  # (H, d, dh), (H, dh, d)
        small = wo.double() @ C @ wv.double()  # (H, dh, dh) = W_O C W_V
        lam = torch.linalg.eigvals(small)  # (H, dh) complex
        out.append((lam.sum(-1).real / lam.abs().sum(-1).clamp_min(1e-30)).numpy())
    return np.stack(out)


@S.register("copying_ov", kind="weights", value_range=(-1.0, 1.0),
            needs_unembedding=True,
            definition="sum(eig)/sum(|eig|) of the OV circuit W_E W_V W_O W_U (norm gains folded)")
def copying_ov(lm, params, progress: bool = True) -> list[dict]:
    """Weights-only copying score of every head (see module docstring); rows of the score table."""
    try:
        scores = ov_eigen_scores(ov_weights(lm))
    except UnsupportedArchitecture as err:
        return nan_rows(lm, "copying_ov", str(err))
    return [dict(model=lm.key, layer=layer, head=head, score_name="copying_ov",
                 value=float(scores[layer, head]), stderr=float("nan"), n=0, method="weights:ov_eigenvalues",
                 settings='{"folded": ["input_norm", "post_attention_norm", "final_norm", "embed_scale"]}',
                 scorer_version=1, reason="")
            for layer in range(scores.shape[0]) for head in range(scores.shape[1])]


@dataclass
class CopyingContext:
    """Per-model constants for the behavioural copying score.

    Attributes:
        W_O: per layer ``(n_heads, d_head, d)`` output maps (post-attention gain folded).
        U_rows: ``(V, d)`` unembedding rows with the final-norm gain folded in.
        mu: ``(d,)`` mean row of ``U_rows``.
        L: ``(d, d)`` Cholesky-like factor with ``L L^T = cov(U_rows)`` so ``std(u) = |o L|``.
    """

    W_O: list[torch.Tensor]
    U_rows: torch.Tensor
    mu: torch.Tensor
    L: torch.Tensor

    @classmethod
    def build(cls, lm) -> "CopyingContext":
        ov = ov_weights(lm)
        U = ov.W_U.T.contiguous()  # (V, d)
        mu = U.mean(0)
        Uc = (U - mu).double()
        cov = Uc.T @ Uc / U.shape[0]  # (d, d)
        evals, evecs = torch.linalg.eigh(cov)
        L = (evecs * evals.clamp_min(0).sqrt()).float()  # cov = L L^T
        return cls(W_O=ov.W_O, U_rows=U, mu=mu, L=L)


@S.register("copying", kind="head_output", value_range=(-math.inf, math.inf),
            needs_unembedding=True,
            definition="mean z-score (over the vocabulary) of the attended token's direct logit from the head")
def copying(attn: torch.Tensor, layout: S.ProbeLayout, *, z: torch.Tensor, tokens: torch.Tensor,
            layer: int, ctx: CopyingContext) -> torch.Tensor:
    """Behavioural copying z-score per sequence and head (see module docstring).

    Args:
        attn: ``(batch, heads, T, T)`` attention probabilities.
        layout: probe positions.
        z: ``(batch, T, heads * d_head)`` per-head attention outputs (input of ``o_proj``).
        tokens: ``(batch, T)`` token ids.
        layer: layer index.
        ctx: per-model constants.

    Returns:
        ``(batch, heads)`` mean z-score over second-copy queries.
    """
    q = layout.second_half  # (Q,)
    B, H = attn.shape[:2]
    a = attn[:, :, q, layout.offset:].float()  # (B, H, Q, K') content keys only
    j = a.argmax(-1) + layout.offset  # (B, H, Q) attended position
    t = torch.gather(tokens[:, None, :].expand(B, H, -1), 2, j)  # (B, H, Q) attended token
    W_O = ctx.W_O[layer]  # (H, dh, d)
    dh = W_O.shape[1]
    zq = z[:, q, :].float().reshape(B, len(q), H, dh).permute(0, 2, 1, 3)  # (B, H, Q, dh)
    o = torch.einsum("bhqe,hed->bhqd", zq, W_O)  # (B, H, Q, d) head's direct write
    w = ctx.U_rows[t]  # (B, H, Q, d) unembedding row of the attended token
    num = (o * (w - ctx.mu)).sum(-1)  # (B, H, Q)
    den = (o @ ctx.L).norm(dim=-1).clamp_min(1e-12)  # (B, H, Q) std of u over the vocab
    return (num / den).mean(-1)  # (B, H)
