"""Unit tier for Phase 1: corpus splits, segment pooling, the cloner's predictor, the training loop
(validation-based epoch choice, schedule, seeds per model) and held-out evaluation."""

import numpy as np
import pandas as pd
import pytest
import torch

from attendome.prep.align import pool_attention, segment_map, SegmentMap, shared_segments, TokenSpans
from attendome.clone.data import pad_batch, repeat_targets, SegmentData, valid_mask
from attendome.clone.evaluate import evaluate_heads
from attendome.clone.losses import mean_kl
from attendome.clone.model import bilinear_logprobs, BilinearCloner, train_cloner
from attendome.prep.corpus import build_prompts, check_disjoint
from attendome.clone.training import fit, lr_factor, seed_for
from attendome.core.params import CorpusParams, TrainParams


def test_corpus_has_three_splits_by_document_and_checks_them():
    df = build_prompts(CorpusParams(n_generated=8))
    assert set(df.split) == {"train", "val", "heldout"}
    for a, b in (("train", "val"), ("train", "heldout"), ("val", "heldout")):
        A, B = df[df.split == a], df[df.split == b]
        assert not set(A.doc_id) & set(B.doc_id)
        assert not set(A.text_sha256) & set(B.text_sha256)
    # the checker really checks: put a held-out text into the validation split and it must refuse
    ho = df[df.split == "heldout"]
    bad = pd.concat([df, ho.head(1).assign(split="val", doc_id="pydoc:leak")])
    with pytest.raises(ValueError, match="both val and heldout"):
        check_disjoint(bad)
    assert build_prompts(CorpusParams(n_generated=8)).equals(df)  # seeded


def test_validation_split_never_touches_held_out_documents():
    # the held-out documents are drawn first; the validation split is carved from the rest, so any
    # val_fraction leaves the held-out set exactly as it is
    held = None
    for vf in (0.05, 0.15, 0.4):
        df = build_prompts(CorpusParams(n_generated=8, val_fraction=vf))
        h = set(df[df.split == "heldout"].doc_id)
        assert not h & set(df[df.split == "val"].doc_id)
        held = h if held is None else held
        assert h == held
    df = build_prompts(CorpusParams(n_generated=8, val_fraction=0.15))
    train_docs = set(build_prompts(CorpusParams(n_generated=8, val_fraction=0.05)).query("split != 'heldout'").doc_id)
    assert set(df[df.split == "val"].doc_id) <= train_docs


def test_segments_never_cut_a_token():
    text = "unbelievable  tokens"
    a = TokenSpans(ids=[0, 1, 2, 3], spans=[None, (0, 2), (2, 12), (12, 20)])      # "un" "believable" " tokens"
    b = TokenSpans(ids=[5, 6, 7], spans=[(0, 6), (6, 12), (13, 20)])               # "unbeli" "evable" "tokens"
    segs = shared_segments(text, [a, b])
    assert segs == [(0, 12), (14, 20)]
    m = segment_map(text, a, segs)
    assert m.seg_of_token.tolist() == [-1, 0, 0, 1] and m.last_token.tolist() == [2, 3]


def test_pooled_rows_sum_to_one_with_sink_column():
    smap = SegmentMap(seg_of_token=np.array([-1, 0, 0, 1, 1, 2]), last_token=np.array([2, 4, 5]))
    T = 6
    attn = torch.tril(torch.rand(3, T, T))
    attn = attn / attn.sum(-1, keepdim=True)
    pooled = pool_attention(attn, smap)  # (3, 3, 4)
    assert pooled.shape == (3, 3, 4)
    assert torch.allclose(pooled.sum(-1), torch.ones(3, 3), atol=1e-6)
    assert torch.allclose(pooled[:, 0, 0], attn[:, 2, 0])  # sink = the BOS column
    assert torch.all(pooled[:, 0, 2:] == 0)  # causal: segment 0 sees nothing after it


def test_repeat_targets_by_hand():
    ind, dup = repeat_targets(["a", "b", "c", "a", "b", "c"])
    assert dup.tolist() == [-1, -1, -1, 0, 1, 2]
    assert ind.tolist() == [-1, -1, -1, 1, 2, 3]  # the segment after the earlier copy (A[i, i-L+1])


def synthetic_data(n_prompts: int, n_heads: int, d: int = 12, seed: int = 0):
    """Features and targets that are an exact bilinear function of the features."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(n_heads, d, 4, generator=g) * 1.5
    K = torch.randn(n_heads, d, 4, generator=g) * 1.5
    sw = torch.randn(n_heads, d, generator=g) * 0.5
    Z, A = [], []
    for _ in range(n_prompts):
        S = int(torch.randint(8, 16, (1,), generator=g))
        z = torch.randn(S, d, generator=g)
        valid = valid_mask([S], S, True)
        lp = bilinear_logprobs(z[None], Q, K, sw, torch.zeros(n_heads), valid)[0]
        Z.append(z)
        A.append(lp.exp())
    return SegmentData([f"p{i}" for i in range(n_prompts)], Z, A, True)


def _split(data: SegmentData, a: int, b: int) -> SegmentData:
    return SegmentData(data.prompt_ids[a:b], data.Z[a:b], data.A[a:b], data.causal)


def test_exactly_bilinear_head_is_cloned_to_near_zero_heldout_error():
    data = synthetic_data(180, 3)
    train, val, held = _split(data, 0, 120), _split(data, 120, 150), _split(data, 150, 180)
    tp = TrainParams(rank=8, epochs=60, lr=0.03, batch_prompts=16, position_dims=0, prev_keys=False,
                     weight_decay=0.0, patience=60, position_components=0)
    model, res = train_cloner(train, val, tp, n_heads=3, seed=seed_for("synthetic", 0), progress=False)
    per = evaluate_heads(model, held, 3)
    sel = per[(per.kind == "all") & (per.metric == "kl")]
    kl = sel[sel.method == "model"]["value"]
    uni = sel[sel.method == "uniform"]["value"]
    assert kl.max() < 0.02, kl.tolist()
    assert (kl.to_numpy() < 0.05 * uni.to_numpy()).all()
    assert res.history[res.best_epoch]["val_kl"] < res.history[0]["val_kl"]


def induction_data(n_prompts: int, seed: int = 0, vocab: int = 24, d: int = 16, half: int = 6):
    """Repeat prompts ``w1..wn w1..wn`` of random word vectors; one head attends exactly like an
    induction head (second-copy query I -> the segment after the earlier copy), the sink elsewhere."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(vocab, d, generator=g)
    Z, A = [], []
    for _ in range(n_prompts):
        words = torch.randperm(vocab, generator=g)[:half]
        seq = torch.cat([words, words])
        S = len(seq)
        a = torch.zeros(1, S, S + 1)
        a[0, :, 0] = 1.0  # sink
        for i in range(half, S):
            a[0, i, 0] = 0.0
            a[0, i, 1 + (i - half + 1)] = 1.0  # the segment after the earlier copy
        Z.append(E[seq])
        A.append(a)
    return SegmentData([f"p{i}" for i in range(n_prompts)], Z, A, True)


def test_previous_segment_keys_make_induction_expressible():
    data = induction_data(150)
    train, val, held = _split(data, 0, 100), _split(data, 100, 125), _split(data, 125, 150)
    kls = {}
    for prev in (False, True):
        tp = TrainParams(
            rank=8,
            epochs=40,
            lr=0.03,
            batch_prompts=16,
            position_dims=0,
            prev_keys=prev,
            patience=40,
            match_terms=False,
            max_offset=2,
            position_components=0,
        )
        model, _ = train_cloner(train, val, tp, 1, seed=seed_for("induction", 0), progress=False)
        kls[prev] = mean_kl(model, held, 16)
    assert kls[True] < 0.3 * kls[False], kls


def test_two_models_never_start_from_the_same_weights():
    seeds = {k: seed_for(k, 0) for k in ("smollm2-135m", "gemma3-270m", "smollm2-135m-random")}
    assert len(set(seeds.values())) == 3
    assert seed_for("smollm2-135m", 0, 1) != seeds["smollm2-135m"]  # replicates differ too
    assert seed_for("smollm2-135m", 0) == seeds["smollm2-135m"]  # and are stable
    a = BilinearCloner(9, 8, 4, seeds["smollm2-135m"])
    b = BilinearCloner(9, 8, 4, seeds["smollm2-135m-random"])
    assert not torch.allclose(a.Q, b.Q) and not torch.allclose(a.K, b.K)


def test_fit_keeps_the_best_validation_epoch_and_stops_early():
    # a parameter pulled towards 3 by training, while validation prefers 1: validation KL is lowest
    # on the way, then rises; fit must restore exactly that epoch and stop after `patience`
    w = torch.nn.Parameter(torch.zeros(()))
    tp = TrainParams(epochs=50, lr=0.2, patience=3, warmup_epochs=0, weight_decay=0.0, grad_clip=10.0)

    def epoch_steps(rng):
        for _ in range(2):
            yield lambda: ((w - 3.0) ** 2, 0.0, 1)

    def validate():
        return float((w.detach() - 1.0) ** 2)

    res = fit([w], epoch_steps, 2, validate, tp, np.random.default_rng(0), progress=False)
    vals = [h["val_kl"] for h in res.history]
    assert res.best_epoch == int(np.argmin(vals))
    assert res.epochs_run == res.best_epoch + 1 + tp.patience and res.stopped_early
    assert validate() == pytest.approx(res.best_val)


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_fit_validates_and_keeps_the_weight_average_by_hand(ema):
    # noisy targets make the raw parameter jump; with ema the validated (and kept) values must be the
    # hand-computed average of the raw trajectory, and training must go on from the raw values
    torch.manual_seed(0)
    targets = torch.randn(3 * 4, 2) * 3
    w = torch.nn.Parameter(torch.zeros(2))
    tp = TrainParams(epochs=3, lr=0.5, patience=10, warmup_epochs=0, weight_decay=0.0, grad_clip=100.0,
                     min_lr_frac=1.0)
    raw, seen = [], []

    def epoch_steps(rng):
        for _ in range(4):
            def step():
                raw.append(w.detach().clone())  # the raw value after the previous step
                return ((w - targets[len(raw) - 1]) ** 2).sum(), 0.0, 1
            yield step

    def validate():
        seen.append(w.detach().clone())
        return -float(len(seen))  # every epoch "improves": the last one is kept

    fit([w], epoch_steps, 4, validate, tp, np.random.default_rng(0), progress=False, ema=ema)
    if ema == 0:  # the raw parameters are validated: epoch 0's value is where epoch 1 starts from
        assert torch.equal(seen[0], raw[4]) and torch.equal(seen[1], raw[8])
    else:
        avg = torch.zeros(2)
        for t in range(8):  # raw[t + 1]: the value after step t
            d = min(ema, (1 + t) / (10 + t))
            avg = d * avg + (1 - d) * raw[t + 1]
            if t == 3:
                assert torch.allclose(seen[0], avg, atol=1e-6)
        assert torch.allclose(seen[1], avg, atol=1e-6)
        assert not torch.allclose(raw[4], seen[0])  # training resumed from the raw value, not the average
    assert torch.equal(w.detach(), seen[-1])  # the best (last) epoch's validated values are kept
    with pytest.raises(ValueError, match="ema"):
        fit([w], epoch_steps, 4, validate, tp, np.random.default_rng(0), progress=False, ema=1.0)


def test_learning_rate_schedule_warms_up_then_decays():
    f = [lr_factor(s, 100, 10, 0.05) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.05, abs=0.01)


def test_gradients_are_clipped():
    w = torch.nn.Parameter(torch.zeros(3))
    tp = TrainParams(epochs=1, lr=1.0, grad_clip=0.5, warmup_epochs=0, weight_decay=0.0)
    res = fit(
        [w],
        lambda rng: [lambda: ((w - 100.0).pow(2).sum(), 0.0, 1)],
        1,
        lambda: 0.0,
        tp,
        np.random.default_rng(0),
        progress=False,
    )
    assert res.history[0]["grad_norm"] > 100  # the norm before clipping is recorded
    # Adam's first step has size ~lr whatever the gradient, so check the clipped gradient instead
    w.grad = None
    loss = (w - 100.0).pow(2).sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([w], tp.grad_clip)
    assert float(w.grad.norm()) == pytest.approx(0.5, rel=1e-4)


def test_evaluation_reports_kinds_and_target_mass():
    data = induction_data(20)
    data.kinds = ["repeat"] * 10 + ["prose"] * 10
    texts = [[str(v) for v in z.round(decimals=4).tolist()] for z in data.Z]  # one "word" per segment vector
    data.ind = [repeat_targets(t)[0] for t in texts]
    data.dup = [repeat_targets(t)[1] for t in texts]
    # the "model" is the truth itself: its target mass equals the true one, its KL is ~0
    per = evaluate_heads(
        lambda b: torch.log(b.A.clamp_min(1e-12)), data, 1, positional=None, methods=("model", "uniform")
    )
    assert set(per.kind) == {"all", "prose", "repeat"}
    m = per.set_index(["method", "kind", "metric"])["value"]
    assert m[("true", "repeat", "ind_mass")] == pytest.approx(1.0)
    assert m[("model", "repeat", "ind_mass")] == pytest.approx(1.0, abs=1e-3)
    assert m[("model", "all", "kl")] < 1e-2 < m[("uniform", "all", "kl")]


def test_token_count_bias_shifts_mass_to_longer_segments():
    S = 4
    b = pad_batch(
        SegmentData(
            ["p"],
            [torch.zeros(S, 2)],
            [torch.full((1, S, S + 1), 1 / (S + 1))],
            False,
            [torch.log(torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0]))],
        ),
        [0],
    )
    m = BilinearCloner(1, 2, 2, 0, prev_keys=False)
    with torch.no_grad():
        m.Q.zero_()
    p = m(b).exp()[0, 0, 0]  # row 0: sink + 4 segments, all logits 0 except w * log n
    assert float(p[2]) == pytest.approx(3 * float(p[1]))  # a 3-token segment gets 3x the mass at w = 1


def test_training_params_validated():
    with pytest.raises(Exception, match="even"):
        TrainParams(position_dims=3)
    with pytest.raises(Exception, match="lr"):
        TrainParams(lr=0)
    with pytest.raises(Exception, match="seed"):
        TrainParams(seed=-1)


def test_positional_basis_reconstructs_a_purely_positional_head():
    # a head that always attends to the previous segment (the sink for the first): the absolute-position
    # code at initialisation already predicts it almost exactly, before any training
    data = induction_data(60)
    for a in data.A:
        S = a.shape[1]
        a.zero_()
        a[0, 0, 0] = 1.0
        a[0, torch.arange(1, S), torch.arange(1, S)] = 1.0
    from attendome.clone.positional import positional_basis

    basis = positional_basis([data], 2, 1e-3)
    m = BilinearCloner(1, data.d_in, 2, 0, prev_keys=False, basis=basis)
    with torch.no_grad():
        m.Q.zero_()
    assert mean_kl(m, data, 16) < 0.05
    assert mean_kl(BilinearCloner(1, data.d_in, 2, 0, prev_keys=False), data, 16) > 1.0


def test_batched_segment_attention_equals_one_prompt_at_a_time():
    from attendome.prep.align import segment_prompts
    from attendome.prep.segattn import segment_attention
    from attendome.dataset.classifier import wrap_model
    from tests.tiny_models import build_tiny_induction_gpt2

    model, tok = build_tiny_induction_gpt2()
    lm = wrap_model(model, tok, "tiny")
    texts = ["w1 w2 w3 w4 w5 w6 w7", "w3 w9 w3 w9 w3 w9", "w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15", "w2 w2 w2 w2 w2 w2"]
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(4)], "text": texts})
    kept, segments, _ = segment_prompts(prompts, {"tiny": tok}, 64, 3)
    one = segment_attention(lm, kept, segments, progress=False, batch=1)
    many = segment_attention(lm, kept, segments, progress=False, batch=4)
    assert one.keys() == many.keys()
    for k in one:
        assert torch.allclose(one[k].float(), many[k].float(), atol=2e-3), k


def test_max_rise_detects_a_spike():
    from attendome.clone.training import max_rise

    assert max_rise([0.5, 0.4, 0.3]) == 0.0
    assert max_rise([0.5, 0.4, 0.44, 0.3]) == pytest.approx(0.1)
    assert max_rise([0.47, 0.469, 1.081]) == pytest.approx(1.081 / 0.469 - 1)  # the diverged run of the review


def planted_induction(n_prompts: int, d: int = 32, vocab: int = 40, seed: int = 0):
    """Prompts ``w_1..w_L w_1..w_L`` of random words (random ``d``-dim vectors, ``L`` drawn in 4..9 so
    that no fixed offset or position finds the target) and one induction head: every second-copy query
    ``I`` puts all its mass on the segment after the earlier copy of its word, every other row on the
    sink."""
    words = torch.randn(vocab, d, generator=torch.Generator().manual_seed(1234))  # one vocabulary for all splits
    g = torch.Generator().manual_seed(seed)
    Z, A = [], []
    for _ in range(n_prompts):
        L = int(torch.randint(4, 10, (1,), generator=g))
        ids = torch.randperm(vocab, generator=g)[:L]
        z = words[torch.cat([ids, ids])]  # (2L, d)
        S = 2 * L
        a = torch.zeros(1, S, S + 1)
        a[0, :, 0] = 1.0
        for i in range(L, S):
            a[0, i, 0] = 0.0
            a[0, i, 1 + (i - L + 1)] = 1.0
        Z.append(z)
        A.append(a)
    return SegmentData([f"p{i}" for i in range(n_prompts)], Z, A, True)


def test_only_the_match_terms_reproduce_a_planted_induction_head():
    # no rank-2 bilinear form (keys with the previous segment, as always) can say "after the same
    # word" for 40 random words at once; one weight on the ready-made match term can
    train, val, test = planted_induction(96, seed=0), planted_induction(24, seed=1), planted_induction(48, seed=2)
    kl = {}
    for match in (False, True):
        tp = TrainParams(
            rank=2,
            epochs=40,
            lr=0.05,
            position_dims=0,
            position_components=0,
            prev_keys=True,
            match_terms=match,
            patience=40,
            weight_decay=0.0,
        )
        model, _ = train_cloner(train, val, tp, 1, seed=0, progress=False)
        kl[match] = mean_kl(model, test, 16)
    assert kl[True] < 0.25 * kl[False], kl
    assert kl[True] < 0.2, kl
