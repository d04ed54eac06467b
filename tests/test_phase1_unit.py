"""Unit tier for Phase 1: corpus split, segment pooling, and cloning a synthetic head exactly."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from attendome.clone.align import SegmentMap, pool_attention, shared_segments, TokenSpans, segment_map
from attendome.clone.cloner import (BilinearCloner, SegmentData, bilinear_logprobs, evaluate_heads, train_cloner,
                              valid_mask)
from attendome.clone.corpus import build_prompts, check_disjoint
from attendome.core.params import CorpusParams, TrainParams


def test_corpus_is_split_by_document_and_checked():
    df = build_prompts(CorpusParams(n_generated=8))
    assert set(df.split) == {"train", "heldout"}
    tr, ho = df[df.split == "train"], df[df.split == "heldout"]
    assert not set(tr.doc_id) & set(ho.doc_id)
    assert not set(tr.text_sha256) & set(ho.text_sha256)
    # the checker really checks: put a held-out text into training and it must refuse
    bad = pd.concat([df, ho.head(1).assign(split="train", doc_id="pydoc:leak")])
    with pytest.raises(ValueError, match="also occur in training"):
        check_disjoint(bad)
    assert build_prompts(CorpusParams(n_generated=8)).equals(df)  # seeded


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


def test_exactly_bilinear_head_is_cloned_to_near_zero_heldout_error():
    data = synthetic_data(160, 3)
    train = SegmentData(data.prompt_ids[:120], data.Z[:120], data.A[:120], True)
    held = SegmentData(data.prompt_ids[120:], data.Z[120:], data.A[120:], True)
    tp = TrainParams(rank=8, epochs=60, lr=0.03, batch_prompts=16, position_dims=0)
    model, hist = train_cloner(train, held, tp, n_heads=3, progress=False)
    per = evaluate_heads(lambda Z, v: model(Z, v), held, 3)
    kl = per[(per.method == "model") & (per.metric == "kl")]["value"]
    uni = per[(per.method == "uniform") & (per.metric == "kl")]["value"]
    assert kl.max() < 0.02, kl.tolist()
    assert (kl.to_numpy() < 0.05 * uni.to_numpy()).all()
    assert hist[-1]["heldout_kl"] < hist[0]["heldout_kl"]


def test_training_params_validated():
    with pytest.raises(Exception, match="even"):
        TrainParams(position_dims=3)
    with pytest.raises(Exception, match="lr"):
        TrainParams(lr=0)
