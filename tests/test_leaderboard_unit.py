"""Unit tier for Phase 2: leaderboard metrics on hand-made embeddings, leakage, and the universal
encoder recovering planted shared head types (with a planted odd head flagged as an outlier)."""

import numpy as np
import pytest
import torch

from attendome.clone.cloner import SegmentData, bilinear_logprobs, evaluate_heads, valid_mask
from attendome.space.leaderboard import flag_outliers, hit_chance, lomo_f1, retrieval_at_k
from attendome.core.params import EmbedParams
from attendome.space.universal import ModelData, evaluate_universal, train_universal


def _planted(n_models=3, per_model=12, seed=0):
    rng = np.random.default_rng(seed)
    models = np.repeat([f"m{i}" for i in range(n_models)], per_model)
    labels = np.tile(np.arange(per_model) < 3, n_models)  # 3 induction heads per model
    return models, labels, rng


def test_perfect_embedding_gives_retrieval_and_f1_of_one():
    models, labels, rng = _planted()
    X = np.where(labels[:, None], [1.0, 0.0], [0.0, 1.0]) + 0.01 * rng.standard_normal((len(labels), 2))
    r = retrieval_at_k(X, models, labels, [1, 5])
    assert r["k"][1]["recall"] == 1.0 and r["k"][5]["recall"] == 1.0 and r["k"][5]["hit"] == 1.0
    assert r["k"][5]["recall_chance"] == pytest.approx(6 / 24)
    assert lomo_f1(X, models, labels)["f1"] == 1.0


def test_shuffled_labels_give_chance():
    rng = np.random.default_rng(1)
    models = np.repeat([f"m{i}" for i in range(6)], 100)
    labels = rng.random(600) < 0.2
    X = rng.standard_normal((600, 8))
    r = retrieval_at_k(X, models, labels, [10])
    assert abs(r["k"][10]["recall"] - r["k"][10]["recall_chance"]) < 0.05
    f = lomo_f1(X, models, labels)
    assert f["f1"] < 0.45 and abs(f["f1"] - f["f1_shuffled"]) < 0.15


def test_f1_never_trains_on_the_model_it_tests():
    # only model m0 has positives, and the embedding identifies the model perfectly: a classifier
    # that saw m0 in training would score F1 = 1; leave-one-model-out must score 0
    models = np.repeat(["m0", "m1", "m2"], 10)
    labels = models == "m0"
    X = np.eye(3)[np.repeat([0, 1, 2], 10)]
    assert lomo_f1(X, models, labels)["f1"] == 0.0


def test_hit_chance_and_outlier_rules():
    assert hit_chance(10, 0, 3) == 0.0 and hit_chance(10, 9, 3) == 1.0
    assert hit_chance(10, 1, 1) == pytest.approx(0.1)
    e = np.r_[np.random.default_rng(0).normal(1, 0.05, 100), 5.0]
    _, flagged = flag_outliers(e, "robust_z", 3.5)
    assert flagged[-1] and flagged.sum() <= 2
    _, f2 = flag_outliers(e, "percentile", 99)
    assert f2[-1]


TYPES = 3


def planted_models(n_models=3, heads_per_type=2, n_prompts=70, d=10, seed=0, odd_in="m1"):
    """Models whose heads are noisy copies of 3 shared bilinear types, plus one odd head that
    attends at random (a new Dirichlet draw per prompt: no function of the features)."""
    g = torch.Generator().manual_seed(seed)
    base = [(torch.randn(d, 4, generator=g) * 1.5, torch.randn(d, 4, generator=g) * 1.5) for _ in range(TYPES)]
    Zs = []
    for _ in range(n_prompts):
        S = int(torch.randint(8, 14, (1,), generator=g))
        Zs.append(torch.randn(S, d, generator=g))
    out, types = [], {}
    for mi in range(n_models):
        key = f"m{mi}"
        Q = torch.stack([base[t][0] + 0.1 * torch.randn(d, 4, generator=g) for t in range(TYPES) for _ in range(heads_per_type)])
        K = torch.stack([base[t][1] + 0.1 * torch.randn(d, 4, generator=g) for t in range(TYPES) for _ in range(heads_per_type)])
        H = len(Q)
        A = []
        for z in Zs:
            S = z.shape[0]
            lp = bilinear_logprobs(z[None], Q, K, torch.zeros(H, d), torch.zeros(H), valid_mask([S], S, True))[0]
            a = lp.exp()
            if key == odd_in:
                noise = torch.distributions.Dirichlet(torch.full((S + 1,), 0.3)).sample((S,))
                noise = noise * valid_mask([S], S, True)[0]
                a = torch.cat([a, (noise / noise.sum(-1, keepdim=True))[None]])
            A.append(a)
        n = A[0].shape[0]
        types[key] = [t for t in range(TYPES) for _ in range(heads_per_type)] + ([-1] if key == odd_in else [])
        tr = SegmentData([f"p{i}" for i in range(50)], Zs[:50], A[:50], True)
        ho = SegmentData([f"p{i}" for i in range(50, n_prompts)], Zs[50:], A[50:], True)
        out.append(ModelData(key, tr, ho, 1, n))
    return out, types


def test_universal_encoder_recovers_planted_types_and_flags_the_odd_head():
    torch.manual_seed(0)
    models, types = planted_models()
    tp = EmbedParams(dim=8, rank=8, epochs=40, lr=0.02, heads_per_batch=8, batch_prompts=10, position_dims=0,
                     max_offset=4)
    enc, _ = train_universal(models, tp, progress=False)
    X = np.concatenate([enc.emb[m.key].detach().numpy() for m in models])
    model_of = np.concatenate([[m.key] * m.n for m in models])
    t = np.concatenate([types[m.key] for m in models])
    for target in range(TYPES):
        r = retrieval_at_k(X, model_of, t == target, [2])
        assert r["k"][2]["recall"] >= 0.75, (target, r)
        assert r["k"][2]["recall"] > 2 * r["k"][2]["recall_chance"]
    errs = np.concatenate([evaluate_universal(enc, m, 16).query("method == 'model' and metric == 'kl'")["value"]
                           for m in models])
    _, flagged = flag_outliers(errs, "robust_z", 3.5)
    assert flagged[t == -1].all() and flagged.sum() == 1
