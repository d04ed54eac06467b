"""Unit tier: needle-in-a-haystack trials and the retrieval hit rule."""

import numpy as np
import torch

from attendome.core.params import RetrievalParams
from attendome.atlas.retrieval import _hits, make_trials
from tests.tiny_models import _tokenizer


class WordTok:
    """Whitespace tokenizer over a growing vocabulary (enough for trial construction)."""

    bos_token_id = 0
    eos_token_id = None

    def __init__(self):
        self.vocab = {"<bos>": 0}

    def encode(self, text, add_special_tokens=False):
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.replace(".", " . ").split()]
        return ([0] if add_special_tokens else []) + ids


def test_trials_grid_and_needle_span():
    rp = RetrievalParams(context_lengths=(64, 128), depths=(0.0, 0.5, 1.0), needles_per_cell=2, needle_words=4)
    trials = make_trials(WordTok(), rp)
    assert len(trials) == 2 * 3 * 2
    for t in trials:
        s, e = t.span
        assert torch.equal(t.prompt[s:e], t.answer)  # the phrase sits in the needle token-for-token
        assert len(t.answer) == 4
    again = make_trials(WordTok(), rp)
    assert all(torch.equal(a.prompt, b.prompt) for a, b in zip(trials, again))  # seeded


def test_depth_moves_the_needle():
    rp = RetrievalParams(context_lengths=(128,), depths=(0.0, 1.0), needles_per_cell=1, needle_words=3)
    shallow, deep = make_trials(WordTok(), rp)
    assert shallow.span[0] < 10 < 100 < deep.span[0]


def test_hit_rule_needs_both_position_in_span_and_same_token():
    ids = torch.tensor([0, 5, 6, 7, 8, 6])
    emitted = torch.tensor([6, 7])
    span = (2, 4)
    top = torch.tensor([[2, 3],    # in span, right tokens -> 2 hits
                        [5, 3],    # token 6 but outside span -> 1 hit
                        [3, 2]])   # in span, wrong tokens -> 0
    assert _hits(top, ids, emitted, span).tolist() == [2, 1, 0]


def test_real_tokenizer_trials_roundtrip():
    tok = _tokenizer()
    assert tok.encode("w1 w2", add_special_tokens=False) == [1, 2]


def test_haystack_cache_never_outlives_its_tokenizer():
    """Models are loaded one at a time, so a new tokenizer can reuse a freed one's ``id``; the
    cached haystack must go with the old tokenizer (this once made trials differ between runs)."""
    import gc

    from attendome.atlas import retrieval as R

    tok = WordTok()
    first = R._haystack_ids(tok)
    key = id(tok)
    assert R._HAYSTACK_CACHE[key] is first
    del tok
    gc.collect()
    assert key not in R._HAYSTACK_CACHE
    shifted = WordTok()
    shifted.vocab.update({"zzz": 1})  # every word gets a different id than in `first`
    assert not np.array_equal(R._haystack_ids(shifted), first)


def test_trials_identical_across_many_fresh_tokenizers():
    rp = RetrievalParams(context_lengths=(64,), depths=(0.5,), needles_per_cell=3, needle_words=4)
    ref = [t.prompt for t in make_trials(WordTok(), rp)]
    for _ in range(5):  # fresh tokenizers, freed right away: addresses get reused
        assert all(torch.equal(a, b.prompt) for a, b in zip(ref, make_trials(WordTok(), rp)))
