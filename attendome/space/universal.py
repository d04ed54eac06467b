"""Phase 2: one universal head encoder across models, after "The Wisdom of a Crowd of Brains: A
Universal Brain Encoder" (arXiv 2406.12179), with heads in place of voxels and language models in
place of subjects.

A shared network maps the frozen segment features ``Z`` and a head's compact embedding ``e_h``
(``dim`` numbers, the only per-head parameters) to the head's attention:

    Q_h = Q_0 + sum_k e_h[k] Q_k        K_h = K_0 + sum_k e_h[k] K_k          (d_in x r each)
    s_h = s_0 + S e_h,  b_h = b_0 + c . e_h,  p_h = p_0 + P e_h                 (sink and rel. bias)
    A_hat_h = the bilinear attention of :mod:`attendome.clone.cloner` with these maps

Training samples, per step, one model (probability proportional to its head count), a batch of
training prompts and ``heads_per_batch`` of that model's heads (as the paper samples voxels), and
minimises the same row-wise KL. Transfer protocol (the test of "universal"): train without one
model, freeze the shared network, and fit only that model's head embeddings on its training
prompts; its held-out-prompt error is then compared with the in-training models'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from attendome.clone.cloner import (SegmentData, _loss, bilinear_logprobs, evaluate_heads, kl_rows, length_batches,
                              pad_batch, sorted_batches)

__all__ = ["ModelData", "UniversalEncoder", "train_universal", "fit_new_embeddings", "evaluate_universal",
           "embedding_table"]


@dataclass
class ModelData:
    """One model's data for Phase 2 (train and held-out prompts share the prompt set across models)."""

    key: str
    train: SegmentData
    heldout: SegmentData
    n_layers: int
    n_heads: int

    @property
    def n(self) -> int:
        return self.n_layers * self.n_heads


class UniversalEncoder(nn.Module):
    """Shared hypernetwork + per-head embeddings (see module docstring).

    Args:
        head_counts: ``{model_key: number of heads}``; embeddings are created for each.
        d_in: feature dimension; rank: bilinear rank r; dim: embedding size; max_offset: R.
    """

    def __init__(self, head_counts: dict[str, int], d_in: int, rank: int, dim: int, max_offset: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.rank, self.dim = rank, dim
        sd = 1.0 / math.sqrt(d_in)
        self.Q0 = nn.Parameter(torch.randn(d_in, rank, generator=g) * sd)
        self.K0 = nn.Parameter(torch.randn(d_in, rank, generator=g) * sd)
        self.Qb = nn.Parameter(torch.randn(dim, d_in, rank, generator=g) * sd / math.sqrt(dim))
        self.Kb = nn.Parameter(torch.randn(dim, d_in, rank, generator=g) * sd / math.sqrt(dim))
        self.s0 = nn.Parameter(torch.zeros(d_in))
        self.Sb = nn.Parameter(torch.zeros(dim, d_in))
        self.b0 = nn.Parameter(torch.zeros(()))
        self.cb = nn.Parameter(torch.zeros(dim))
        self.p0 = nn.Parameter(torch.zeros(2 * max_offset + 1))
        self.Pb = nn.Parameter(torch.zeros(dim, 2 * max_offset + 1))
        self.emb = nn.ParameterDict({
            _pkey(k): nn.Parameter(torch.randn(n, dim, generator=g) * 0.1) for k, n in head_counts.items()})

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("emb.")]

    def head_maps(self, e: torch.Tensor):
        """Per-head bilinear maps from embeddings ``e (H, dim)``."""
        Q = self.Q0 + torch.einsum("hk,kdr->hdr", e, self.Qb)  # (H, d, r)
        K = self.K0 + torch.einsum("hk,kdr->hdr", e, self.Kb)  # (H, d, r)
        sw = self.s0 + e @ self.Sb  # (H, d)
        sb = self.b0 + e @ self.cb  # (H,)
        rel = self.p0 + e @ self.Pb  # (H, 2R+1)
        return Q, K, sw, sb, rel

    def forward(self, key: str, Z: torch.Tensor, valid: torch.Tensor, heads: torch.Tensor | None = None,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        """Log attention ``(B, H, S, S + 1)`` of ``heads`` of model ``key`` (or of embeddings ``emb``)."""
        e = emb if emb is not None else self.emb[_pkey(key)]
        if heads is not None:
            e = e[heads]
        Q, K, sw, sb, rel = self.head_maps(e)
        return bilinear_logprobs(Z, Q, K, sw, sb, valid, rel)


def _pkey(key: str) -> str:
    return key.replace(".", "_")


def _steps(models: list[ModelData], tp, rng: np.random.Generator):
    """One epoch of (model, prompt batch, head subset) triples."""
    weights = np.array([m.n for m in models], dtype=float)
    weights /= weights.sum()
    queues = {m.key: [] for m in models}
    n_batches = max(len(length_batches(m.train, tp.batch_prompts, rng)) for m in models)
    for _ in range(n_batches * len(models)):
        m = models[rng.choice(len(models), p=weights)]
        if not queues[m.key]:
            queues[m.key] = length_batches(m.train, tp.batch_prompts, rng)
        idx = queues[m.key].pop()
        heads = torch.as_tensor(np.sort(rng.choice(m.n, size=min(tp.heads_per_batch, m.n), replace=False)))
        yield m, idx, heads


def train_universal(models: list[ModelData], tp, tracker=None, progress: bool = True,
                    desc: str = "universal") -> tuple[UniversalEncoder, list[dict]]:
    """Train the universal encoder on ``models`` (see module docstring).

    Returns:
        ``(encoder, history)``; history has per-epoch mean train KL and held-out KL per model.
    """
    torch.manual_seed(tp.seed)
    rng = np.random.default_rng(tp.seed)
    d_in = models[0].train.d_in
    enc = UniversalEncoder({m.key: m.n for m in models}, d_in, tp.rank, tp.dim, tp.max_offset, tp.seed)
    opt = torch.optim.Adam(enc.parameters(), lr=tp.lr)
    history = []
    for epoch in tqdm(range(tp.epochs), desc=desc, disable=not progress, unit="epoch"):
        kl_sum, n_rows = 0.0, 0
        for m, idx, heads in _steps(models, tp, rng):
            Z, A, valid, rv = pad_batch(m.train, idx, heads)
            logq = enc(m.key, Z, valid, heads)
            loss = _loss(A, logq, valid, rv)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                kl_sum += float((kl_rows(A, logq.detach(), valid) * rv[:, None]).sum())
                n_rows += int(rv.sum()) * A.shape[1]
        rec = {"epoch": epoch, "train_kl": kl_sum / max(n_rows, 1)}
        if tracker is not None or epoch == tp.epochs - 1:
            for m in models:
                rec[f"heldout_kl/{m.key}"] = mean_kl(enc, m, tp.batch_prompts)
        history.append(rec)
        if tracker is not None:
            tracker.log_metrics({k.replace("/", "."): v for k, v in rec.items() if k != "epoch"}, step=epoch)
    return enc.eval(), history


@torch.no_grad()
def mean_kl(enc: UniversalEncoder, m: ModelData, batch: int, emb: torch.Tensor | None = None,
            split: str = "heldout") -> float:
    """Mean row KL over all heads of model ``m`` on a split."""
    data = getattr(m, split)
    tot, rows = 0.0, 0
    for idx in sorted_batches(data, batch):
        Z, A, valid, rv = pad_batch(data, idx)
        kl = kl_rows(A, enc(m.key, Z, valid, emb=emb), valid)
        tot += float((kl * rv[:, None]).sum())
        rows += int(rv.sum()) * A.shape[1]
    return tot / max(rows, 1)


def fit_new_embeddings(enc: UniversalEncoder, m: ModelData, tp, progress: bool = True) -> torch.Tensor:
    """Transfer: fit only the embeddings of a model unseen in training; the shared network is frozen.

    Returns:
        ``(n_heads, dim)`` embeddings.
    """
    g = torch.Generator().manual_seed(tp.seed + 1)
    emb = nn.Parameter(torch.randn(m.n, tp.dim, generator=g) * 0.1)
    for p in enc.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([emb], lr=tp.lr)
    rng = np.random.default_rng(tp.seed + 1)
    for _ in tqdm(range(tp.epochs), desc=f"{m.key}: transfer (embeddings only)", disable=not progress, unit="epoch"):
        for idx in length_batches(m.train, tp.batch_prompts, rng):
            Z, A, valid, rv = pad_batch(m.train, idx)
            loss = _loss(A, enc(m.key, Z, valid, emb=emb), valid, rv)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in enc.parameters():
        p.requires_grad_(True)
    return emb.detach()


def evaluate_universal(enc: UniversalEncoder, m: ModelData, batch: int, emb: torch.Tensor | None = None,
                       positional=None) -> pd.DataFrame:
    """Per-head held-out KL/MSE of the universal encoder and the baselines (see :func:`evaluate_heads`)."""
    per = evaluate_heads(lambda Z, v: enc(m.key, Z, v, emb=emb), m.heldout, m.n, batch, positional=positional)
    per.insert(0, "model", m.key)
    per.insert(1, "layer", per.head_index // m.n_heads)
    per.insert(2, "head", per.head_index % m.n_heads)
    return per.drop(columns="head_index")


def embedding_table(models: list[ModelData], embs: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Tidy-wide embedding table ``model, layer, head, e_0 .. e_{d-1}``."""
    rows = []
    for m in models:
        e = embs[m.key].detach().cpu().numpy()
        for i in range(m.n):
            rows.append({"model": m.key, "layer": i // m.n_heads, "head": i % m.n_heads,
                         **{f"e_{k}": float(e[i, k]) for k in range(e.shape[1])}})
    return pd.DataFrame(rows)
