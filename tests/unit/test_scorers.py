"""Unit tier: scorers on hand-built attention patterns, and the registry."""

import math

import pytest
import torch

from attendome.atlas import scorers as S
from attendome.atlas.scorers import ProbeLayout
from tests.tiny_models import perfect_pattern

L, OFF = 6, 1
T = OFF + 2 * L
LAYOUT = ProbeLayout(seq_len=L, offset=OFF, total_len=T)
SECOND = range(OFF + L, OFF + 2 * L)


def test_perfect_previous_token_scores_one():
    attn = perfect_pattern(T, 1, range(1, T))
    assert torch.allclose(S.get("previous_token").fn(attn, LAYOUT), torch.ones(2, 1))


def test_perfect_induction_scores_one_and_not_duplicate():
    attn = perfect_pattern(T, L - 1, SECOND)
    assert torch.allclose(S.get("induction").fn(attn, LAYOUT), torch.ones(2, 1))
    assert S.get("duplicate_token").fn(attn, LAYOUT).max() < 1e-6


def test_perfect_duplicate_token_scores_one():
    attn = perfect_pattern(T, L, SECOND)
    assert torch.allclose(S.get("duplicate_token").fn(attn, LAYOUT), torch.ones(2, 1))
    assert S.get("induction").fn(attn, LAYOUT).max() < 1e-6


def test_uniform_causal_attention_has_known_scores():
    attn = perfect_pattern(T, 0, [])  # uniform causal everywhere
    expected_ind = sum(1 / (i + 1) for i in SECOND) / L
    assert math.isclose(float(S.get("induction").fn(attn, LAYOUT)[0, 0]), expected_ind, rel_tol=1e-5)
    expected_prev = sum(1 / (i + 1) for i in range(OFF + 1, T)) / (T - OFF - 1)
    assert math.isclose(float(S.get("previous_token").fn(attn, LAYOUT)[0, 0]), expected_prev, rel_tol=1e-5)


def test_bos_is_not_a_previous_token_target():
    # a pure BOS sink scores 0 previous-token: the first content token (whose previous is BOS) is excluded
    attn = torch.zeros(1, 1, T, T)
    attn[..., 0] = 1.0
    assert float(S.get("previous_token").fn(attn, LAYOUT)) == 0.0


def test_registry_rejects_duplicates_and_lists_unknown():
    with pytest.raises(ValueError, match="already registered"):
        S.register("induction", kind="pattern", value_range=(0, 1))(lambda a, l: a)
    with pytest.raises(KeyError, match="available"):
        S.get("nonexistent_head_type")
    meta = S.get("induction")
    assert meta.causal_only and meta.value_range == (0.0, 1.0) and meta.higher_is_better
    assert {"induction", "previous_token", "duplicate_token"} <= set(S.available())
