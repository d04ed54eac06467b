"""The universal encoder's shared capacity (``shared_rank``, ``shared_hidden``) on planted
heads: switched off it is the encoder of earlier rounds; the shared bank starts silent; and heads that
are different mixtures of one bank of rank-1 forms are reproduced only with the bank."""

from __future__ import annotations

import torch

from attendome.clone.data import SegmentData, valid_mask
from attendome.clone.data import pad_batch
from attendome.clone.losses import mean_kl
from attendome.core.params import EmbedParams
from attendome.space.universal import ModelData, UniversalEncoder, train_universal

D, BANK = 10, 6


def _tp(**over) -> EmbedParams:
    base = dict(dim=8, rank=1, epochs=60, lr=0.03, heads_per_batch=6, batch_prompts=10, position_dims=0, max_offset=2,
                prev_keys=False, patience=60, weight_decay=0.0, position_components=0)
    return EmbedParams(**{**base, **over})


def bank_models(n_models=3, n_heads=6, n_prompts=120, seed=0):
    """Heads that weight one shared bank of ``BANK`` rank-1 forms differently: head h of every model
    has logits ``sum_j a_hj (Z WQ)_j (Z WK)_j`` (a full-rank form, different per head)."""
    g = torch.Generator().manual_seed(seed)
    WQ, WK = torch.randn(D, BANK, generator=g), torch.randn(D, BANK, generator=g)
    Zs = [torch.randn(int(torch.randint(8, 13, (1,), generator=g)), D, generator=g) for _ in range(n_prompts)]
    out = []
    for mi in range(n_models):
        a = torch.randn(n_heads, BANK, generator=g) * 1.2  # (H, BANK)
        A = []
        for z in Zs:
            S = z.shape[0]
            q, k = z @ WQ, z @ WK  # (S, BANK)
            logits = torch.einsum("sj,tj,hj->hst", q, k, a)  # (H, S, S)
            full = torch.cat([torch.zeros(n_heads, S, 1), logits], -1)  # sink column first
            full = full.masked_fill(~valid_mask([S], S, True)[0][None], -1e9)
            A.append(torch.softmax(full, -1))

        def part(i, j):
            return SegmentData([f"p{t}" for t in range(i, j)], Zs[i:j], A[i:j], True)

        out.append(ModelData(f"m{mi}", part(0, 80), part(80, 95), part(95, n_prompts), 1, n_heads))
    return out


def test_without_shared_capacity_the_encoder_is_unchanged():
    enc = UniversalEncoder({"a": 4}, D, 2, 8, 2, seed=3)
    names = {n for n, _ in enc.named_parameters()}
    assert not names & {"WQ", "WK", "a0", "Ab", "F1.weight", "F2.weight"}
    # the same seed draws the same weights as with the options spelled out as off
    same = UniversalEncoder({"a": 4}, D, 2, 8, 2, seed=3, shared_rank=0, shared_hidden=0)
    for (n, p), (_, q) in zip(enc.named_parameters(), same.named_parameters()):
        assert torch.equal(p, q), n


def test_the_shared_bank_and_feature_network_start_silent():
    models = bank_models(n_models=1, n_prompts=12)
    m = models[0]
    plain = UniversalEncoder({"m0": m.n}, D, 1, 8, 2, seed=0)
    wide = UniversalEncoder({"m0": m.n}, D, 1, 8, 2, seed=0, shared_rank=BANK, shared_hidden=16)
    wide.load_state_dict(plain.state_dict(), strict=False)
    batch = pad_batch(m.train, list(range(4)), None)
    torch.testing.assert_close(wide("m0", batch), plain("m0", batch), rtol=1e-5, atol=1e-5)
    assert wide.WQ.shape == (D, BANK) and wide.F1.weight.shape == (16, D)


def test_only_the_shared_bank_reproduces_heads_that_mix_one_bank():
    models = bank_models()
    kl = {}
    for R in (0, BANK):
        torch.manual_seed(0)
        enc, res, _ = train_universal(models, _tp(), seed=0, progress=False, shared_rank=R)
        kl[R] = sum(mean_kl(lambda b, k=m.key: enc(k, b), m.heldout, 16) for m in models) / len(models)
    # a rank-1 hypernetwork cannot express a per-head full-rank form; the bank can
    assert kl[BANK] < 0.5 * kl[0], kl
