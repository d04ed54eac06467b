"""Unit tier for Phase 2: every leaderboard metric against a hand-computed case, chance levels,
confidence intervals, permutation nulls, leakage, outliers, correspondence, and the universal
encoder recovering planted shared head types."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from attendome.clone.data import SegmentData, valid_mask
from attendome.clone.model import bilinear_logprobs
from attendome.core.params import EmbedParams, LeaderboardParams
from attendome.board.run import _columns, fit_transform, qualifying_types
from attendome.board.metrics import (bootstrap_ci, ratio_ci, correspondence, expected_ap, flag_outliers, hit_chance,
                                     lomo_classification, permutation_null_map, ranking_metrics, retrieval_queries)
from attendome.space.universal import ModelData, evaluate_universal, train_universal


def test_ranking_metrics_by_hand():
    # ranked labels: + - + - -  (N = 5 candidates, P = 2 positives)
    r = ranking_metrics(np.array([1, 0, 1, 0, 0], bool), [1, 2, 3, 10])
    assert r["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r["precision@1"] == 1.0 and r["precision@2"] == 0.5 and r["precision@3"] == pytest.approx(2 / 3)
    assert r["precision@10"] == pytest.approx(2 / 10)  # precision@k divides by k: its ceiling is P / k
    assert r["recall@1"] == 0.5 and r["recall@2"] == 0.5 and r["recall@3"] == 1.0
    assert r["hit@1"] == 1.0
    assert r["precision@1_chance"] == pytest.approx(2 / 5)
    assert r["recall@2_chance"] == pytest.approx(2 / 5) and r["recall@10_chance"] == 1.0
    assert r["hit@1_chance"] == pytest.approx(2 / 5)
    assert r["ap_chance"] == pytest.approx(expected_ap(5, 2))


def test_expected_ap_is_exact():
    assert expected_ap(2, 1) == pytest.approx(0.75)  # positive first (AP 1) or second (AP 1/2)
    assert expected_ap(5, 5) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    n, p = 12, 3
    sims = [ranking_metrics(rng.permutation(np.r_[np.ones(p), np.zeros(n - p)]).astype(bool), [1])["ap"]
            for _ in range(20000)]
    assert np.mean(sims) == pytest.approx(expected_ap(n, p), abs=0.005)


def test_hit_chance():
    assert hit_chance(10, 0, 3) == 0.0 and hit_chance(10, 9, 3) == 1.0
    assert hit_chance(10, 1, 1) == pytest.approx(0.1)
    assert hit_chance(10, 2, 2) == pytest.approx(1 - math.comb(8, 2) / math.comb(10, 2))


def _planted(n_models=4, per_model=12, pos=3, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    model = np.repeat([f"m{i}" for i in range(n_models)], per_model)
    labels = np.tile(np.arange(per_model) < pos, n_models)
    X = np.where(labels[:, None], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]) + noise * rng.standard_normal((len(labels), 3))
    return X, model, labels, rng


def test_planted_embedding_wins_and_random_sits_at_chance():
    X, model, labels, rng = _planted(n_models=6, per_model=40, pos=6)
    family = model.copy()
    good = retrieval_queries(X, model, family, labels, [5])
    good = good[good.scope == "all"]
    assert good["ap"].mean() == pytest.approx(1.0) and good["precision@5"].mean() == pytest.approx(1.0)
    assert good["recall@5"].mean() == pytest.approx(5 / 30)  # 30 positives in the other 5 models
    R = rng.standard_normal((len(labels), 8))
    bad = retrieval_queries(R, model, family, labels, [5])
    bad = bad[bad.scope == "all"]
    lo, hi = bootstrap_ci(bad["ap"].to_numpy(), None, 2000, 0)
    assert lo <= bad["ap_chance"].mean() <= hi
    null = permutation_null_map(R, model, labels, 200, 0)
    p_random = (1 + np.sum(null >= bad["ap"].mean())) / 201
    null_good = permutation_null_map(X, model, labels, 200, 0)
    p_good = (1 + np.sum(null_good >= good["ap"].mean())) / 201
    assert p_good < 0.01 < p_random


def test_scopes_separate_same_family_from_cross_family_pairs():
    X, model, labels, _ = _planted(n_models=3)
    family = np.where(model == "m2", "fam-a", np.where(model == "m1", "fam-a", "fam-b"))
    q = retrieval_queries(X, model, family, labels, [1])
    m0 = q[q["query"] < 12]  # queries of m0 (fam-b) have no same-family candidate
    assert set(m0.scope) == {"all", "cross_family"}
    m1 = q[(q["query"] >= 12) & (q["query"] < 24)]
    assert set(m1.scope) == {"all", "cross_family", "same_family"}
    assert (m1[m1.scope == "same_family"]["n"] == 12).all()  # only m2's heads


def test_two_level_bootstrap_is_wider_when_queries_cluster_by_model():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 25)
    values = np.repeat(rng.normal(0, 1, 4), 25) + rng.normal(0, 0.05, 100)
    lo1, hi1 = bootstrap_ci(values, None, 2000, 0)
    lo2, hi2 = bootstrap_ci(values, groups, 2000, 0)
    assert lo1 <= values.mean() <= hi1 and lo2 <= values.mean() <= hi2
    assert (hi2 - lo2) > 3 * (hi1 - lo1)


def test_classifier_never_trains_on_the_model_it_tests():
    # only model m0 has positives, and the embedding identifies the model perfectly: a classifier
    # that saw m0 in training would score F1 = 1; leave-one-model-out must score 0
    models = np.repeat(["m0", "m1", "m2"], 10)
    labels = models == "m0"
    X = np.eye(3)[np.repeat([0, 1, 2], 10)]
    assert lomo_classification(X, models, labels)["f1"] == 0.0


def test_classifier_on_planted_and_shuffled_embeddings():
    X, model, labels, rng = _planted()
    c = lomo_classification(X, model, labels, n_perm=20, seed=0)
    assert c["f1"] == 1.0 and c["mean_ap"] == 1.0
    assert set(c["ap_by_model"]) == {"m0", "m1", "m2", "m3"}
    assert c["ap_by_model"]["m0"]["chance"] == pytest.approx(3 / 12)
    assert np.mean(c["null"]["f1"]) < 0.6
    R = rng.standard_normal((len(labels), 4))
    assert lomo_classification(R, model, labels)["mean_ap"] < 0.8


def test_outliers_are_flagged_within_their_model_and_only_when_worse_than_positional():
    rng = np.random.default_rng(0)
    model = np.repeat(["a", "b"], 100)
    ratio = np.r_[rng.uniform(0.5, 0.7, 99), 3.0, rng.uniform(0.5, 0.7, 99), 0.95]
    _, flagged = flag_outliers(ratio, model, 3.5, 1.0)
    assert flagged[99] and flagged.sum() == 1  # b's tail head is far out but still beats its positional
    _, f2 = flag_outliers(ratio, model, 99, 1.0, rule="percentile")
    assert f2[99] and not f2[199]


def test_correspondence_finds_mutual_pairs():
    X = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.9, 0], [0, 0, 1]], float)
    model = np.array(["a", "a", "b", "b", "b"])
    c = correspondence(X, model)
    ab = c[(c.i < 2)].set_index("i")
    assert ab.loc[0, "j"] == 2 and ab.loc[1, "j"] == 3 and ab["mutual"].all()
    ba = c[c.i == 4].iloc[0]
    assert not ba["mutual"] and ba["rank_in_own_model"] == 3  # head 4 fits nowhere: last for its match


def test_like_for_like_transform_and_score_columns():
    X = np.random.default_rng(0).standard_normal((20, 40))
    model = np.repeat(["a", "b"], 10)
    T = fit_transform(X, np.ones(20, bool), model, 8, "global")
    assert T.shape == (20, 8) and np.allclose(T.mean(0), 0, atol=1e-9)
    Tm = fit_transform(X, np.ones(20, bool), model, 8, "model")
    assert np.allclose(Tm[:10].mean(0), 0, atol=1e-9)
    cols = pd.DataFrame(columns=["model", "e_induction", "e_retrieval", "e_retrieval_tf", "e_previous_token"])
    mech = (("induction", "retrieval", "retrieval_tf"),)
    assert _columns(cols, "scores", "induction", mech) == ["e_previous_token"]
    assert _columns(cols, "scores", "previous_token", mech) == ["e_induction", "e_retrieval", "e_retrieval_tf"]
    assert _columns(cols, "rsa", "induction", mech) == list(cols.columns[1:])


def test_qualifying_types_use_only_real_models_and_defined_labels():
    meta = pd.DataFrame({"model": np.repeat(["a", "b", "ctrl", "enc"], 4), "layer": 0, "head": np.tile(range(4), 4),
                         "family": "f", "control": np.repeat([False, False, True, False], 4)})
    meta["label_induction"] = ["high"] * 3 + ["low"] + ["medium"] * 3 + ["low"] + ["high"] * 4 + ["n/a"] * 4
    meta["label_previous_token"] = ["high"] * 3 + ["low"] * 5 + ["high"] * 4 + ["low"] * 4
    lp = LeaderboardParams(min_positives=3, min_models=2)
    q = qualifying_types(meta, lp)
    assert set(q) == {"induction"}  # previous_token has 3 positives in one real model only
    assert q["induction"]["n_pool"] == 8 and q["induction"]["pool_models"] == ["a", "b"]


TYPES = 3


def planted_models(n_models=3, heads_per_type=2, n_prompts=90, d=10, seed=0, odd_in="m1"):
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
        Q = torch.stack(
            [base[t][0] + 0.1 * torch.randn(d, 4, generator=g) for t in range(TYPES) for _ in range(heads_per_type)]
        )
        K = torch.stack(
            [base[t][1] + 0.1 * torch.randn(d, 4, generator=g) for t in range(TYPES) for _ in range(heads_per_type)]
        )
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

        def part(a, b):
            return SegmentData([f"p{i}" for i in range(a, b)], Zs[a:b], A[a:b], True)

        out.append(ModelData(key, part(0, 50), part(50, 70), part(70, n_prompts), 1, n))
    return out, types


def test_universal_encoder_recovers_planted_types_and_flags_the_odd_head():
    torch.manual_seed(0)
    models, types = planted_models()
    tp = EmbedParams(
        dim=8,
        rank=8,
        epochs=40,
        lr=0.02,
        heads_per_batch=8,
        batch_prompts=10,
        position_dims=0,
        max_offset=4,
        prev_keys=False,
        patience=40,
        weight_decay=0.0,
        position_components=0,
    )
    enc, res, updates = train_universal(models, tp, seed=0, progress=False)
    assert res.best_epoch == int(np.argmin([h["val_kl"] for h in res.history]))
    assert all(u.sum() > 0 for u in updates.values())
    X = np.concatenate([enc.embedding(m.key).numpy() for m in models])
    model_of = np.concatenate([[m.key] * m.n for m in models])
    t = np.concatenate([types[m.key] for m in models])
    for target in range(TYPES):
        q = retrieval_queries(X, model_of, model_of, t == target, [2])
        q = q[q.scope == "all"]
        assert q["precision@2"].mean() >= 0.75, (target, q["precision@2"].mean())
        assert q["ap"].mean() > 2 * q["ap_chance"].mean()
    ratios, mods = [], []
    for m in models:
        per = evaluate_universal(enc, m, 16, positional=torch.full((m.n, 14, 15), 1.0 / 15))
        w = per[(per.kind == "all") & (per.metric == "kl")].pivot_table(index="head", columns="method", values="value")
        ratios.append((w["model"] / w["positional"]).to_numpy())
        mods += [m.key] * m.n
    _, flagged = flag_outliers(np.concatenate(ratios), np.array(mods), 3.5, 0.0)
    assert flagged[t == -1].all() and flagged.sum() == 1


def test_paired_differences_against_a_hand_computed_case():
    # two methods on the same 4 queries of 2 models: universal AP 1, 1, 0.5, 0.5; rsa 0.5 everywhere.
    # Per-query differences 0.5, 0.5, 0, 0 -> mean 0.25; every query of model a gains 0.5 and of b
    # none, so the by-model bootstrap CI spans [0, 0.5] and cannot exclude 0
    from attendome.board.run import paired_differences

    heads = pd.DataFrame({"model": ["a", "a", "b", "b"], "layer": [0, 1, 0, 1], "head": [0, 0, 0, 0]})
    rows = []
    for m, aps in (("universal", [1, 1, 0.5, 0.5]), ("rsa", [0.5] * 4)):
        for h, ap in zip(heads.itertuples(), aps):
            rows.append(
                dict(
                    method=m,
                    head_type="induction",
                    seed=0,
                    scope="all",
                    model=h.model,
                    layer=h.layer,
                    head=h.head,
                    ap=ap,
                )
            )
    q = pd.DataFrame(rows)
    meta = heads.assign(cluster=[f"{r.model}|{r.layer}|0" for r in heads.itertuples()])
    lp = LeaderboardParams(n_boot=500)
    d = paired_differences(q, meta, ["induction"], lp)["induction"]["universal-rsa"]
    assert d["mean"] == 0.25 and d["n_queries"] == 4
    lo, hi = d["ci95_by_model"]
    assert lo == 0.0 and hi == 0.5
    lo, hi = d["ci95_by_kv_group"]  # 4 clusters of one query: a finer resampling, inside [0, 0.5]
    assert 0.0 <= lo < 0.25 < hi <= 0.5


def test_kv_groups_cluster_the_query_heads_that_share_keys():
    from attendome.board.run import head_meta
    from attendome.core.params import load_params

    params = load_params("params.yaml")
    idx = pd.DataFrame(
        {"model": ["qwen25-coder-05b"] * 4 + ["minilm-l6"] * 2, "layer": [3] * 6, "head": [0, 6, 7, 13, 0, 1]}
    )
    atlas = pd.DataFrame(columns=["model", "layer", "head", "score_name", "label"])
    meta = head_meta(params, idx, atlas, {"qwen25-coder-05b": (14, 2), "minilm-l6": (12, 12)})
    # Qwen2.5-0.5B: 14 query heads share 2 KV heads (7 each); MiniLM: every head its own group
    assert list(meta.cluster) == [
        "qwen25-coder-05b|3|0",
        "qwen25-coder-05b|3|0",
        "qwen25-coder-05b|3|1",
        "qwen25-coder-05b|3|1",
        "minilm-l6|3|0",
        "minilm-l6|3|1",
    ]


def test_trivial_baselines_code_depth_and_attention_habits():
    from attendome.space.baselines import attention_stats, depth_embeddings, depth_features, depth_stats_embeddings

    f = depth_features(np.array([0.0, 0.1, 0.9, 1.0]))
    c = f / np.linalg.norm(f, axis=1, keepdims=True)
    sim = c @ c.T
    assert sim[0, 1] > sim[0, 2] > 0 and sim[2, 3] > sim[1, 3]  # nearer depths are more similar
    idx = pd.DataFrame({"model": ["m"] * 2, "layer": [0, 3], "head": [0, 0]})
    e = depth_embeddings(idx, {"m": 4})
    assert np.allclose(e.filter(like="e_").to_numpy(), depth_features(np.array([0.0, 1.0])))
    # head 0: all mass on the sink; head 1: all on the previous segment (the sink for the first row)
    S = 5
    a = torch.zeros(2, S, S + 1)
    a[0, :, 0] = 1
    a[1, 0, 0] = 1
    for i in range(1, S):
        a[1, i, i] = 1
    st = attention_stats([{"p": a}], ["p"])
    assert np.allclose(st[0], [1.0, 0.0, 0.0]) and np.allclose(st[1], [0.2, 1.0, 0.0])
    both = depth_stats_embeddings(idx, {"m": 4}, st)
    assert {"e_sink", "e_previous", "e_entropy"} <= set(both.columns)


def test_the_committed_leaderboard_fits_its_typed_records_and_a_foreign_one_is_refused(tmp_path):
    import json

    from attendome.board.records import Board, check_record
    from attendome.core.io import CorruptDataError
    from attendome.report import render
    from tests.conftest import ROOT

    board = json.loads((ROOT / "metrics/leaderboard.json").read_text())
    check_record(board, Board)  # what run_leaderboard writes is what report, plots and explorer read
    broken = json.loads(json.dumps(board))
    t = broken["types"][0]
    del broken["methods"]["universal"][t]["all"]["map"]["ci95_by_model"]
    with pytest.raises(KeyError, match=rf"methods.universal.{t}.all.map: missing 'ci95_by_model'"):
        check_record(broken, Board)
    del broken["pools"]
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/leaderboard.json").write_text(json.dumps(broken))
    with pytest.raises(CorruptDataError, match="missing 'pools'"):
        render(tmp_path)


def test_report_lists_models_by_family_and_names_same_family_pairs():
    from attendome.report import _atlas

    heads = {"qwen-a": {"induction": 3}, "qwen-b": {"induction": 5}, "whisper-x": {"induction": 1, "retrieval": None},
             "qwen-a-random": {"induction": 0}}
    fam = {"qwen-a": {"family": "qwen2.5", "control": False}, "qwen-b": {"family": "qwen2.5", "control": False},
           "whisper-x": {"family": "whisper", "control": False},
           "qwen-a-random": {"family": "qwen-a-random", "control": True}}
    text = "\n".join(_atlas(heads, fam))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[1] for r in rows] == ["qwen-a", "qwen-b", "whisper-x", "qwen-a-random"]  # controls last
    assert "| whisper | whisper-x | 1 | n/a |" in text
    assert "qwen2.5: qwen-a, qwen-b." in text and "whisper:" not in text.split("Same-family")[1]
    solo = "\n".join(_atlas({"m": {"induction": 1}}, {"m": {"family": "m", "control": False}}))
    assert "none in this run" in solo


def test_ratio_ci_is_a_paired_bootstrap_over_items():
    # two heads, universal KL [1, 3], cloner KL [1, 1]: resamples {1,1} -> 1 (p 1/4), {1,3} -> 2 (p 1/2),
    # {3,3} -> 3 (p 1/4); the 95 % percentile interval is [1, 3]
    lo, hi = ratio_ci(np.array([1.0, 3.0]), np.array([1.0, 1.0]), 4000, 0)
    assert (lo, hi) == (1.0, 3.0)
    # a method exactly 0.9 x the other on every head: no spread at all, whatever the heads' own spread
    c = np.random.default_rng(0).gamma(2.0, 0.2, size=50)
    assert ratio_ci(0.9 * c, c, 500, 0) == pytest.approx((0.9, 0.9))
    # pairing matters: heads vary a lot, the ratio on each head barely; an unpaired bootstrap would be wide
    u = c * (0.9 + 0.01 * np.random.default_rng(1).standard_normal(50))
    lo, hi = ratio_ci(u, c, 2000, 0)
    assert 0.88 < lo < 0.9 < hi < 0.92
    assert math.isnan(ratio_ci(np.array([np.nan]), np.array([1.0]))[0])


def test_induction_mass_is_attached_from_the_embed_and_clone_summaries(tmp_path):
    from attendome.board.run import _attach_induction_mass

    (tmp_path / "data/clone").mkdir(parents=True)
    (tmp_path / "data/clone/a.json").write_text(json.dumps({"headline": {"induction_mass": {"predicted": 0.3}}}))
    embed = {"headline": {"models": {
        "a": {"induction_mass": {"n_heads": 4, "predicted": 0.5, "true": 0.6, "positional": 0.1}},
        "b": {}}}}  # b: no induction heads
    rec = {"a": {}, "b": {}}
    _attach_induction_mass(rec, embed, str(tmp_path))
    assert rec["a"]["induction_mass"] == {"n_heads": 4, "universal": 0.5, "cloner": 0.3, "true": 0.6,
                                          "positional": 0.1}
    assert rec["b"]["induction_mass"] is None
