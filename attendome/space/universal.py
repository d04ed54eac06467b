"""Phase 2: one universal head encoder across models, after "The Wisdom of a Crowd of Brains: A
Universal Brain Encoder" (arXiv 2406.12179), with heads in place of voxels and language models in
place of subjects.

A shared network maps the frozen segment features ``Z`` (and the target model's token counts) and
a head's compact embedding ``e_h`` (``dim`` numbers, the only per-head parameters) to the head's
attention, with the predictor of :mod:`attendome.clone.model`:

    Q_h = Q_0 + sum_k e_h[k] Q_k        K_h = K_0 + sum_k e_h[k] K_k     (d_in x r, d_k x r)
    s_h = s_0 + S e_h,  b_h = b_0 + c . e_h,  p_h = p_0 + P e_h,  w_h = w_0 + v . e_h
    c_h = c_0 + M e_h                   (the head's absolute-position code in the shared basis)
    u_h = u_0 + U e_h                   (weights of the two match terms, when ``match_terms``)

Shared capacity: ``shared_rank = R`` (an experiment switch, off in the pipeline;
``experiments/sharing.py``) adds a bank of R rank-1 bilinear forms shared by every head of every model,
``(Z W_Q)_j (Z_k W_K)_j``, which each head weights by ``a_h = a_0 + A e_h`` (R numbers from its
embedding; the bank starts silent, ``a_0 = A = 0``): a per-head full-rank form that no single head's
data has to support. ``shared_hidden = n`` (the param ``embed.shared_hidden``) passes the features
through a shared residual network ``Z + W_2 gelu(W_1 Z + c_1)`` (starting as the identity, ``W_2 =
0``) before every head: capacity that every head of every model shares, which per-head cloners do not
have (``experiments/stopping.py``: validation KL 0.2380 ± 0.0014 over three replicates at n = 64 and
patience 15, against 0.2412 ± 0.0001 without it).

The absolute-position basis (``mu``, ``B_1..B_P``) is that of :func:`attendome.clone.model.positional_basis`
over the training prompts of *all* models (pooled), fixed. Warm start, from training data only: the
first ``P`` numbers of each head's embedding start at its standardised coordinates on that basis
and ``M`` at the matching diagonal, so a head starts from its own (low-rank) positional habit; a
model new to the encoder (transfer) starts the same way from its own training prompts.

Every training step takes, from *every* model, one batch of its training prompts and
``heads_per_batch`` of its heads (sampled, as the paper samples voxels), and minimises the row-wise
KL averaged over models with weights proportional to their head counts; so the shared network sees a
balanced gradient at each step (sampling one model per step made validation KL jump by up to 50 %
between epochs). The hygiene is that of :mod:`attendome.clone.training` (AdamW, clipping, warm-up +
cosine schedule, the epoch chosen on the validation split, seeds per replicate). The number of
gradient updates each head receives is counted, so that the transfer fit can be given the same
budget.

Transfer protocol (the test of "universal"): train without one model, freeze the shared network,
and fit only that model's head embeddings on its training prompts, with the same number of updates
per head as its heads got in joint training and the epoch chosen on its validation prompts; its
held-out error is then compared with the joint run's and with its per-head cloners'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from attendome.clone.data import Batch, length_batches, pad_batch, SegmentData
from attendome.clone.evaluate import evaluate_heads
from attendome.clone.losses import batch_kl, ce_loss, EntropyCache, mean_kl
from attendome.clone.model import bilinear_logprobs
from attendome.clone.positional import absolute_bias, positional_basis, project_positional
from attendome.clone.training import FitResult, fit
from attendome.core.params import EmbedParams

__all__ = ["ModelData", "UniversalEncoder", "train_universal", "fit_new_embeddings", "evaluate_universal",
           "embedding_table"]


@dataclass
class ModelData:
    """One model's data for Phase 2 (the prompt set and its splits are shared by all models)."""

    key: str
    train: SegmentData
    val: SegmentData
    heldout: SegmentData
    n_layers: int
    n_heads: int

    @property
    def n(self) -> int:
        return self.n_layers * self.n_heads


def _pkey(key: str) -> str:
    return key.replace(".", "_")


class UniversalEncoder(nn.Module):
    """Shared hypernetwork + per-head embeddings (see module docstring).

    Args:
        head_counts: ``{model_key: number of heads}``; embeddings are created for each.
        d_in: feature dimension; rank: bilinear rank r; dim: embedding size; max_offset: R.
        seed: initialisation seed. prev_keys: keys also see the previous segment's features.
    """

    def __init__(self, head_counts: dict[str, int], d_in: int, rank: int, dim: int, max_offset: int,
                 seed: int = 0, prev_keys: bool = True, basis: tuple | None = None, match_terms: bool = False,
                 shared_rank: int = 0, shared_hidden: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.rank, self.dim, self.shared_rank, self.shared_hidden = rank, dim, shared_rank, shared_hidden
        d_k = 2 * d_in if prev_keys else d_in
        sq, sk = 1.0 / math.sqrt(d_in), 1.0 / math.sqrt(d_k)
        self.Q0 = nn.Parameter(torch.randn(d_in, rank, generator=g) * sq)
        self.K0 = nn.Parameter(torch.randn(d_k, rank, generator=g) * sk)
        self.Qb = nn.Parameter(torch.randn(dim, d_in, rank, generator=g) * sq / math.sqrt(dim))
        self.Kb = nn.Parameter(torch.randn(dim, d_k, rank, generator=g) * sk / math.sqrt(dim))
        self.s0 = nn.Parameter(torch.zeros(d_in))
        self.Sb = nn.Parameter(torch.zeros(dim, d_in))
        self.b0 = nn.Parameter(torch.zeros(()))
        self.cb = nn.Parameter(torch.zeros(dim))
        self.p0 = nn.Parameter(torch.zeros(2 * max_offset + 1))
        self.Pb = nn.Parameter(torch.zeros(dim, 2 * max_offset + 1))
        self.w0 = nn.Parameter(torch.ones(()))
        self.wb = nn.Parameter(torch.zeros(dim))
        self.u0 = nn.Parameter(torch.zeros(2)) if match_terms else None
        self.Ub = nn.Parameter(torch.zeros(dim, 2)) if match_terms else None
        if shared_rank:  # the shared bank of rank-1 forms and each head's weights on them
            self.WQ = nn.Parameter(torch.randn(d_in, shared_rank, generator=g) * sq)
            self.WK = nn.Parameter(torch.randn(d_k, shared_rank, generator=g) * sk)
            self.a0 = nn.Parameter(torch.zeros(shared_rank))
            self.Ab = nn.Parameter(torch.zeros(dim, shared_rank))
        if shared_hidden:  # the shared feature network Z + W2 gelu(W1 Z + c1), starting as the identity
            self.F1 = nn.Linear(d_in, shared_hidden)
            with torch.no_grad():
                self.F1.weight.copy_(torch.randn(shared_hidden, d_in, generator=g) * sq)
                self.F1.bias.zero_()
            self.F2 = nn.Linear(shared_hidden, d_in)
            with torch.no_grad():
                self.F2.weight.zero_()
                self.F2.bias.zero_()
        emb = {k: torch.randn(n, dim, generator=g) * 0.1 for k, n in head_counts.items()}
        self.has_positions = basis is not None
        if basis is not None:
            mu, B, coef = basis  # coef: {key: (n, P)}
            P = min(B.shape[0], dim)
            allc = torch.cat([coef[k] for k in head_counts])[:, :P]
            scale = allc.std(0).clamp_min(1e-6)  # (P,)
            self.register_buffer("pos_mu", mu.clone())
            self.register_buffer("pos_basis", B[:P].clone())
            self.register_buffer("pos_scale", scale)
            self.c0 = nn.Parameter(torch.zeros(P))
            M = torch.zeros(dim, P)
            M[torch.arange(P), torch.arange(P)] = scale
            self.Mb = nn.Parameter(M)
            for k in head_counts:
                emb[k][:, :P] = coef[k][:, :P] / scale
        self.emb = nn.ParameterDict({_pkey(k): nn.Parameter(v) for k, v in emb.items()})

    def initial_embedding(self, coef: torch.Tensor | None, n: int, seed: int) -> torch.Tensor:
        """Starting embeddings of ``n`` heads of a model new to the encoder (see module docstring)."""
        g = torch.Generator().manual_seed(seed)
        e = torch.randn(n, self.dim, generator=g) * 0.1
        if self.has_positions and coef is not None:
            P = self.pos_basis.shape[0]
            e[:, :P] = coef[:, :P] / self.pos_scale
        return e

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("emb.")]

    def head_maps(self, e: torch.Tensor):
        """Per-head predictor parameters from embeddings ``e (H, dim)``."""
        Q = self.Q0 + torch.einsum("hk,kdr->hdr", e, self.Qb)  # (H, d, r)
        K = self.K0 + torch.einsum("hk,kdr->hdr", e, self.Kb)  # (H, d_k, r)
        sw = self.s0 + e @ self.Sb  # (H, d)
        sb = self.b0 + e @ self.cb  # (H,)
        rel = self.p0 + e @ self.Pb  # (H, 2R+1)
        w = self.w0 + e @ self.wb  # (H,)
        c = self.c0 + e @ self.Mb if self.has_positions else None  # (H, P)
        u = self.u0 + e @ self.Ub if self.u0 is not None else None  # (H, 2)
        if self.shared_rank:
            # bilinear_logprobs divides by sqrt(r + R); these factors keep the head's own rank-r part
            # at its 1/sqrt(r) scale and give the bank 1/sqrt(R)
            r, R = Q.shape[-1], self.shared_rank
            a = self.a0 + e @ self.Ab  # (H, R): the head's weights on the shared rank-1 forms
            Q = torch.cat([Q * math.sqrt((r + R) / r), self.WQ[None] * a[:, None, :] * math.sqrt((r + R) / R)],
                          dim=-1)  # (H, d, r + R)
            K = torch.cat([K, self.WK[None].expand(e.shape[0], -1, -1)], dim=-1)  # (H, d_k, r + R)
        return Q, K, sw, sb, rel, w, c, u

    def features(self, Z: torch.Tensor) -> torch.Tensor:
        """Segment features ``(B, S, d)`` after the shared feature network (unchanged without one)."""
        if not self.shared_hidden:
            return Z
        return Z + self.F2(torch.nn.functional.gelu(self.F1(Z)))  # (B, S, d)

    def forward(self, key: str, batch: Batch, heads: torch.Tensor | None = None,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        """Log attention ``(B, H, S, S + 1)`` of ``heads`` of model ``key`` (or of embeddings ``emb``)."""
        e = emb if emb is not None else self.emb[_pkey(key)]
        if heads is not None:
            e = e[heads]
        Q, K, sw, sb, rel, w, c, u = self.head_maps(e)
        ab = absolute_bias(self.pos_mu, self.pos_basis, c, batch.Z.shape[1]) if c is not None else None
        Z = self.features(batch.Z)  # (B, S, d)
        return bilinear_logprobs(Z, Q, K, sw, sb, batch.valid, rel, batch.logn, w, ab, batch.match, u)

    def embedding(self, key: str) -> torch.Tensor:
        return self.emb[_pkey(key)].detach()


def _val_kl(enc: UniversalEncoder, models: list[ModelData], batch: int) -> tuple[float, dict[str, float]]:
    """Validation KL averaged over every head of every model (rows x heads weighted), and per model."""
    per = {m.key: mean_kl(lambda b, m=m: enc(m.key, b), m.val, batch) for m in models}
    w = np.array([m.n * sum(z.shape[0] for z in m.val.Z) for m in models], dtype=float)
    return float(np.dot(w, [per[m.key] for m in models]) / w.sum()), per


def train_universal(models: list[ModelData], tp: EmbedParams, seed: int, tracker=None, progress: bool = True,
                    desc: str = "universal", shared_rank: int = 0, shared_hidden: int | None = None,
                    ema: float | None = None) -> tuple[UniversalEncoder, FitResult, dict[str, np.ndarray]]:
    """Train the universal encoder on ``models`` (see module docstring).

    ``shared_rank``: the shared bank of :class:`UniversalEncoder` (0: none, the pipeline's encoder; an
    experiment switch of ``experiments/sharing.py`` that did not beat the default on validation).
    ``shared_hidden``: width of the shared feature network (``None``: ``tp.shared_hidden``).
    ``ema``: decay of the weight average that is validated and kept (:func:`~attendome.clone.training.fit`;
    ``None``: ``tp.ema``, as the transfer fit uses it).

    Returns:
        ``(encoder, fit result, updates)``: ``updates[key]`` is ``(n_heads,)`` the number of gradient
        updates each head of that model received up to the chosen epoch.
    """
    torch.manual_seed(seed)
    shared_hidden = tp.shared_hidden if shared_hidden is None else shared_hidden
    d_in = models[0].train.d_in
    basis = None
    if tp.position_components:
        mu, B, coef = positional_basis([m.train for m in models], tp.position_components, tp.position_eps)
        sizes = np.cumsum([0] + [m.n for m in models])
        basis = (mu, B, {m.key: coef[a:b] for m, a, b in zip(models, sizes[:-1], sizes[1:])})
    enc = UniversalEncoder({m.key: m.n for m in models}, d_in, tp.rank, tp.dim, tp.max_offset, seed, tp.prev_keys,
                           basis, tp.match_terms, shared_rank, shared_hidden)
    weights = np.array([m.n for m in models], dtype=float)
    weights /= weights.sum()
    steps = max(len(length_batches(m.train, tp.batch_prompts, np.random.default_rng(0))) for m in models)
    counts = {m.key: np.zeros(m.n, dtype=np.int64) for m in models}
    ent = {m.key: EntropyCache(m.train) for m in models}
    per_epoch_counts: list[dict[str, np.ndarray]] = []
    last_val: dict[str, float] = {}

    def epoch_steps(rng):
        queues = {m.key: [] for m in models}
        for _ in range(steps):
            picks = []
            for m in models:
                if not queues[m.key]:
                    queues[m.key] = length_batches(m.train, tp.batch_prompts, rng)
                idx = queues[m.key].pop()
                heads = torch.as_tensor(np.sort(rng.choice(m.n, size=min(tp.heads_per_batch, m.n), replace=False)))
                counts[m.key][heads.numpy()] += 1
                picks.append((m, idx, heads))

            def step(picks=picks):
                total, kl_sum, rows = 0.0, 0.0, 0
                for w, (m, idx, heads) in zip(weights, picks):
                    b = pad_batch(m.train, idx, heads)
                    loss = ce_loss(b.A, enc(m.key, b, heads), b.valid, b.row_valid)
                    s, n = batch_kl(b.A, None, b.valid, b.row_valid, loss, ent[m.key](idx, heads))
                    total, kl_sum, rows = total + w * loss, kl_sum + s, rows + n
                return total, kl_sum, rows
            yield step
        per_epoch_counts.append({k: v.copy() for k, v in counts.items()})

    def validate():
        v, per = _val_kl(enc, models, tp.batch_prompts)
        last_val.clear()
        last_val.update(per)
        if tracker is not None:
            tracker.log_metrics({f"val_kl.{k}": x for k, x in per.items()}, step=len(per_epoch_counts) - 1)
        return v

    res = fit(list(enc.parameters()), epoch_steps, steps, validate, tp, np.random.default_rng(seed), tracker,
              desc=desc, progress=progress, ema=ema)
    return enc.eval(), res, per_epoch_counts[res.best_epoch]


def fit_new_embeddings(enc: UniversalEncoder, m: ModelData, tp: EmbedParams, seed: int, updates_per_head: float,
                       tracker=None, progress: bool = True) -> tuple[torch.Tensor, FitResult]:
    """Transfer: fit only the embeddings of a model unseen in training; the shared network is frozen.

    Every step updates ``heads_per_batch`` sampled heads of ``m`` on one batch of its training
    prompts; an *epoch* is one pass over its training batches, and the number of epochs is set so
    that each head gets ``updates_per_head`` updates on average at most (the budget its heads got
    in joint training). The epoch is chosen on ``m``'s validation prompts.

    Returns:
        ``((n_heads, dim) embeddings, fit result)``.
    """
    coef = project_positional(m.train, enc.pos_mu, enc.pos_basis, tp.position_eps) if enc.has_positions else None
    emb = nn.Parameter(enc.initial_embedding(coef, m.n, seed))
    for p in enc.parameters():
        p.requires_grad_(False)
    hpb = min(tp.heads_per_batch, m.n)
    n_batches = len(length_batches(m.train, tp.batch_prompts, np.random.default_rng(0)))
    per_epoch = n_batches * hpb / m.n  # mean updates per head and epoch
    ent = EntropyCache(m.train)
    epochs = max(1, int(round(updates_per_head / per_epoch)))
    ttp = tp.model_copy(update={"epochs": epochs})

    def epoch_steps(rng):
        for idx in length_batches(m.train, tp.batch_prompts, rng):
            heads = torch.as_tensor(np.sort(rng.choice(m.n, size=hpb, replace=False)))

            def step(idx=idx, heads=heads):
                b = pad_batch(m.train, idx, heads)
                loss = ce_loss(b.A, enc(m.key, b, heads, emb=emb), b.valid, b.row_valid)
                return (loss,) + batch_kl(b.A, None, b.valid, b.row_valid, loss, ent(idx, heads))
            yield step

    try:
        res = fit([emb], epoch_steps, n_batches, lambda: mean_kl(lambda b: enc(m.key, b, emb=emb), m.val,
                                                                    tp.batch_prompts),
                  ttp, np.random.default_rng(seed), tracker, desc=f"{m.key}: transfer (embeddings only)",
                  progress=progress, log_prefix="transfer.")
    finally:
        for p in enc.parameters():
            p.requires_grad_(True)
    return emb.detach(), res


def evaluate_universal(enc: UniversalEncoder, m: ModelData, batch: int, emb: torch.Tensor | None = None,
                       positional=None) -> pd.DataFrame:
    """Per-head held-out metrics of the universal encoder and the baselines (:func:`evaluate_heads`)."""
    per = evaluate_heads(lambda b: enc(m.key, b, emb=emb), m.heldout, m.n, batch, positional=positional)
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
