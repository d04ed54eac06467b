"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality", arXiv 2404.15574) on needle-in-a-haystack prompts built offline.

Prompt: ``[BOS] haystack[:p] | needle | haystack[p:] | question``, where the haystack is a window
of the standard library's pydoc prose (:mod:`attendome.core.text`), the needle is
``" The secret phrase is: w1 ... wn."`` with ``n`` random words, inserted at a fraction ``depth``
of the context, and the question asks for the phrase and ends with ``"The secret phrase is:"``.
Token ids are concatenated (never re-tokenized), so the phrase has identical tokens in the needle
and in the answer.

A head *retrieves* at a step that emits token ``w`` when its top-1 attended key lies inside the
needle's phrase and holds ``w``. Per trial the head scores ``hits / |phrase tokens|`` in [0, 1];
the score is the mean over trials (stderr across trials). Two variants:

* ``retrieval`` (the paper's definition): greedy generation; only trials in which the model
  actually retrieves the needle count (ROUGE-1 recall of the phrase words in the output >= 0.5, as
  in the paper); ``n`` says how many trials counted. If none did, the score is NaN with that reason.
* ``retrieval_tf`` (teacher-forced, for small models that rarely retrieve on their own): the true
  phrase is fed after the question and every trial counts; each answer position is one step.

CPU defaults use contexts of a few hundred tokens; the paper's setting (GPU) is context lengths
from 1k up to the model's limit (e.g. 4k-50k+) at depths 0 %..100 % in 10 % steps.
"""

from __future__ import annotations

import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from attendome.atlas import registry as S
from attendome.atlas.rows import nan_rows, rows_from_samples
from attendome.core.capture import base_model, capture_attention
from attendome.core.text import NEEDLE_WORDS, pydoc_documents
from attendome.core.tokens import special_affixes
from attendome.core.progress import progress as progress_bar

__all__ = ["NEEDLE_WORDS", "Trial", "make_trials", "teacher_forced_hits", "generation_hits",
           "retrieval", "retrieval_tf"]

QUESTION = "\n\nQuestion: What is the secret phrase in the text above?\nAnswer: The secret phrase is:"
NEEDLE_PRE = " The secret phrase is:"


@dataclass(frozen=True)
class Trial:
    """One needle-in-a-haystack prompt.

    Attributes:
        prompt: ``(T,)`` ids up to and including the question.
        answer: ``(n,)`` ids of the phrase (what a retrieving model says next).
        span: ``(start, end)`` positions of the phrase inside the needle in ``prompt``.
        words: the phrase's words.
        context_length: haystack + needle tokens.
        depth: insertion depth in [0, 1].
    """

    prompt: torch.Tensor
    answer: torch.Tensor
    span: tuple[int, int]
    words: tuple[str, ...]
    context_length: int
    depth: float


_HAYSTACK_CACHE: dict[int, np.ndarray] = {}


def _haystack_ids(tokenizer) -> np.ndarray:
    """``(N,)`` ids of the whole pydoc haystack under ``tokenizer``, cached while it is alive.

    The cache is keyed by ``id(tokenizer)``; a ``weakref.finalize`` drops the entry when the
    tokenizer is collected, so a later tokenizer that happens to reuse the address (models are
    loaded one at a time and released) never sees another tokenizer's ids. Tokenizers that
    cannot be weakly referenced are not cached.
    """
    key = id(tokenizer)
    hit = _HAYSTACK_CACHE.get(key)
    if hit is not None:
        return hit
    text = "\n\n".join(t for _, t in pydoc_documents())
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    try:
        weakref.finalize(tokenizer, _HAYSTACK_CACHE.pop, key, None)
    except TypeError:  # not weakly referenceable: recompute next time rather than risk a stale hit
        return ids
    _HAYSTACK_CACHE[key] = ids
    return ids


def make_trials(tokenizer, rp) -> list[Trial]:
    """All trials of the grid ``context_lengths x depths x needles_per_cell`` (seeded)."""
    hay = _haystack_ids(tokenizer)
    rng = np.random.default_rng(rp.seed)
    prefix, _ = special_affixes(tokenizer)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    pre, post, question = enc(NEEDLE_PRE), enc("."), enc(QUESTION)
    trials = []
    for n_ctx in rp.context_lengths:
        for depth in rp.depths:
            for _ in range(rp.needles_per_cell):
                words = tuple(rng.choice(NEEDLE_WORDS, size=rp.needle_words, replace=False).tolist())
                phrase = enc(" " + " ".join(words))
                needle = pre + phrase + post
                n_hay = n_ctx - len(needle)
                if n_hay < 1 or n_hay >= len(hay):
                    raise ValueError(f"context length {n_ctx} does not fit a needle of {len(needle)} tokens")
                start = int(rng.integers(0, len(hay) - n_hay))
                window = hay[start:start + n_hay].tolist()
                cut = int(round(depth * n_hay))
                ids = prefix + window[:cut] + needle + window[cut:] + question
                s = len(prefix) + cut + len(pre)
                trials.append(Trial(prompt=torch.tensor(ids), answer=torch.tensor(phrase),
                                    span=(s, s + len(phrase)), words=words, context_length=n_ctx,
                                    depth=float(depth)))
    return trials


def _hits(top: torch.Tensor, ids: torch.Tensor, emitted: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """``(heads,)`` number of steps where the head's top-1 key is in ``span`` and holds the emitted token.

    Args:
        top: ``(heads, steps)`` top-1 key position per step.
        ids: ``(T,)`` sequence ids.
        emitted: ``(steps,)`` token emitted at each step.
        span: phrase positions.
    """
    inside = (top >= span[0]) & (top < span[1])
    same = ids[top] == emitted[None, :]
    return (inside & same).sum(-1)


@contextmanager
def attention_implementation(model, impl: str):
    """Run ``model`` with attention implementation ``impl`` (e.g. ``sdpa``) inside the block."""
    old = getattr(model.config, "_attn_implementation", "eager")
    if old != impl:
        model.set_attn_implementation(impl)
    try:
        yield
    finally:
        if old != impl:
            model.set_attn_implementation(old)


PREFILL_CHUNK = 2048
"""Tokens per sdpa prefill step. One step over a long context would build ``T x T`` attention masks
(and, for sliding-window layers, mask them explicitly); chunks keep those at ``chunk x T``, so memory
grows linearly with the context. Contexts up to this length are one step."""


def _full_cache():
    """An empty key/value cache whose every layer keeps all positions.

    The model's own default cache keeps only the last ``sliding_window`` keys of a sliding-window layer
    (Gemma 3: 512). Its attention rows would then index the window, not the sequence, and a top-1 key
    could not be mapped to the needle's positions. With every position kept, the sliding window is
    still applied by the attention mask, and column ``j`` of every captured row is position ``j``.
    """
    from transformers import DynamicCache

    return DynamicCache()


def _prefill(lm, ids: torch.Tensor, chunk: int | None = None):
    """The key/value cache of ``ids`` (1-D), computed with memory-efficient attention (sdpa), in chunks
    of ``chunk`` tokens, with no attention capture; only the transformer body runs (no logits over the
    vocabulary)."""
    body = base_model(lm.model)
    chunk = chunk or PREFILL_CHUNK
    cache = _full_cache()
    with attention_implementation(lm.model, "sdpa"):
        for start in range(0, len(ids), chunk):
            x = ids[start:start + chunk][None].to(lm.device)  # (1, <= chunk)
            cache = _cache_of(body(input_ids=x, use_cache=True, **{_cache_kw(body): cache}))
    return cache


@torch.no_grad()
def teacher_forced_hits(lm, trial: Trial, memory_efficient: bool = True) -> np.ndarray:
    """``(layers, heads)`` fraction of answer tokens each head copies from the needle (teacher-forced).

    With ``memory_efficient`` (default) the context up to the first scored query is prefilled with
    sdpa, and attention probabilities are formed only for the ``n`` scored query rows (the last
    prompt token and the answer tokens but the last) against the cached keys: memory ``O(n T)`` per
    layer instead of ``O(T^2)``. Without it, one eager forward over the whole sequence (the reference
    implementation; the two agree, see ``tests/unit/test_retrieval.py``).
    """
    body = base_model(lm.model)
    ids = torch.cat([trial.prompt, trial.answer])  # (T,)
    n = len(trial.answer)
    first = len(trial.prompt) - 1  # query position emitting answer[0]
    res = np.zeros((lm.n_layers, lm.n_heads))

    if memory_efficient:
        cache = _prefill(lm, ids[:first])

        def on_layer(layer: int, attn: torch.Tensor) -> None:  # (1, heads, n, T): the scored rows only
            top = attn[0].argmax(-1).cpu()  # (heads, n)
            res[layer] = _hits(top, ids, trial.answer, trial.span).numpy() / n

        with capture_attention(body, on_layer):
            body(input_ids=ids[first:first + n][None].to(lm.device), use_cache=True, **{_cache_kw(body): cache})
        return res

    q = torch.arange(first, first + n)  # queries emitting answer[k]

    def on_layer_full(layer: int, attn: torch.Tensor) -> None:  # (1, heads, T, T)
        top = attn[0, :, q, :].argmax(-1).cpu()  # (heads, n)
        res[layer] = _hits(top, ids, trial.answer, trial.span).numpy() / n

    with capture_attention(body, on_layer_full):
        x = ids[None].to(lm.device)
        body(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    return res


def _cache_kw(model) -> str:
    """Name of the forward's cache argument (``cache`` in transformers >= 5.2x, else ``past_key_values``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    """The key/value cache of a model output (``cache`` in transformers >= 5.2x; reading the old name
    ``past_key_values`` there prints a deprecation warning for every model)."""
    return out["cache"] if "cache" in out else out.past_key_values


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@torch.no_grad()
def generation_hits(lm, trial: Trial, max_new_tokens: int,
                    memory_efficient: bool = True) -> tuple[np.ndarray, bool, str]:
    """Greedy generation with per-step top-1 keys.

    With ``memory_efficient`` the prompt but its last token is prefilled with sdpa (no attention
    probabilities, no vocabulary logits); every step that is scored runs eager on one query row.

    Returns:
        ``(scores (layers, heads), retrieved, generated_text)``; ``retrieved`` is ROUGE-1 recall of
        the phrase words >= 0.5.
    """
    steps: list[torch.Tensor] = []  # per step: (layers, heads) top-1 key
    cur = torch.zeros(lm.n_layers, lm.n_heads, dtype=torch.long)

    def on_layer(layer: int, attn: torch.Tensor) -> None:  # (1, heads, q, K): last query row only
        cur[layer] = attn[0, :, -1, :].argmax(-1).cpu()

    emitted: list[int] = []
    eos = getattr(lm.tokenizer, "eos_token_id", None)
    if memory_efficient:  # prefill all but the last prompt token with sdpa; its row and later ones eager
        cache = _prefill(lm, trial.prompt[:-1])
        first = trial.prompt[-1:][None].to(lm.device)
    with capture_attention(lm.model, on_layer):
        if memory_efficient:
            out = lm.model(input_ids=first, use_cache=True, **{_cache_kw(lm.model): cache})
        else:
            out = lm.model(
                input_ids=trial.prompt[None].to(lm.device), use_cache=True, **{_cache_kw(lm.model): _full_cache()}
            )
        for _ in range(max_new_tokens):
            w = int(out.logits[0, -1].argmax())
            steps.append(cur.clone())
            emitted.append(w)
            if w == eos:
                break
            nxt = torch.tensor([[w]], device=lm.device)
            out = lm.model(input_ids=nxt, use_cache=True, **{_cache_kw(lm.model): _cache_of(out)})
    text = lm.tokenizer.decode(emitted, skip_special_tokens=True)
    gen = set(_words(text))
    recall = sum(w in gen for w in trial.words) / len(trial.words)
    top = torch.stack(steps, dim=-1)  # (layers, heads, steps)
    ids = torch.cat([trial.prompt, torch.tensor(emitted)])
    em = torch.tensor(emitted)
    scores = np.stack([_hits(top[layer], ids, em, trial.span).numpy() for layer in range(lm.n_layers)])
    return scores / len(trial.answer), recall >= 0.5, text


def _rows(lm, name: str, per_trial: list[np.ndarray], method: str, settings: dict, reason: str) -> list[dict]:
    if not per_trial:
        return nan_rows(lm, name, reason)
    return rows_from_samples(lm, name, np.stack(per_trial), method, settings)


def _settings(rp, trials: list[Trial], **extra) -> dict:
    return dict(
        probe="needle_in_haystack",
        context_lengths=list(rp.context_lengths),
        depths=list(rp.depths),
        needles_per_cell=rp.needles_per_cell,
        needle_words=rp.needle_words,
        seed=rp.seed,
        n_trials=len(trials),
        **extra,
    )


@S.register(
    "retrieval",
    kind="behaviour",
    value_range=(0.0, 1.0),
    causal_only=True,
    definition="Wu et al. 2024: fraction of generated needle tokens the head copies (top-1) from the needle",
)
def retrieval(lm, params, progress: bool = True) -> list[dict]:
    """Generation-based retrieval score (the paper's); only trials where the model retrieves count."""
    rp = params.retrieval
    trials = make_trials(lm.tokenizer, rp)
    kept, outputs = [], []
    for t in progress_bar(trials, f"{lm.key}: retrieval (generation)", enabled=progress):
        scores, ok, text = generation_hits(lm, t, rp.max_new_tokens, rp.memory_efficient)
        outputs.append(text)
        if ok:
            kept.append(scores)
    settings = _settings(
        rp,
        trials,
        variant="generation",
        max_new_tokens=rp.max_new_tokens,
        n_retrieved=len(kept),
        success_rule="rouge1_recall>=0.5",
    )
    return _rows(
        lm,
        "retrieval",
        kept,
        "probe:needle_generation",
        settings,
        f"model retrieved the needle in 0 of {len(trials)} trials (greedy, ROUGE-1 recall >= 0.5)",
    )


@S.register(
    "retrieval_tf",
    kind="behaviour",
    value_range=(0.0, 1.0),
    causal_only=True,
    definition="teacher-forced retrieval: fraction of answer tokens the head copies (top-1) from the needle",
)
def retrieval_tf(lm, params, progress: bool = True) -> list[dict]:
    """Teacher-forced retrieval score; every trial counts."""
    rp = params.retrieval
    trials = make_trials(lm.tokenizer, rp)
    per = [
        teacher_forced_hits(lm, t, rp.memory_efficient)
        for t in progress_bar(trials, f"{lm.key}: retrieval (teacher-forced)", enabled=progress)
    ]
    return _rows(
        lm,
        "retrieval_tf",
        per,
        "probe:needle_teacher_forced",
        _settings(rp, trials, variant="teacher_forced"),
        "no trials",
    )
