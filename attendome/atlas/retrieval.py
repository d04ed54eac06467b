"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality", arXiv 2404.15574) on needle-in-a-haystack prompts built offline.

``retrieval`` follows the authors' protocol (their code, ``nightdessert/Retrieval_Head``,
``retrieval_head_detection.py``), adapted to an offline haystack:

* **Haystack**: a window of the standard library's pydoc prose (:mod:`attendome.core.text`; the
  authors use Paul Graham's essays). Token ids are concatenated, never re-tokenized.
* **Needle**: a natural-language statement with an open question about it and the span that
  answers it (``QA_NEEDLES``: templates in the style of the authors' ``needles.jsonl``, slots filled
  with seeded random choices, so no model knows the answer from pretraining).
* **Depth**: the needle goes in at a fraction ``depth`` of the haystack, moved back to the nearest
  sentence end (a token whose text ends in ``.``), as the authors do; depth 1 puts it at the end.
* **Prompt**: ``template prefix | haystack[:p] | needle | haystack[p:] | "\nBased on the content of
  the book, Question: <q>\nAnswer:"``, where the template prefix is exactly what the tokenizer adds
  by default (no BOS fallback: SmolLM2's tokenizer adds nothing, so nothing is prepended).
* **Answer span**: the window of the needle's tokens that best overlaps the answer's tokens (the
  authors' fuzzy match: share of the answer's distinct ids found in the window; we take the best
  window inside the needle, they take the first window anywhere with overlap > 0.9).
* **Decoding**: greedy, stopping after a token that contains a newline once the answer has begun
  (leading line breaks do not end it: small models open with one), an EOS, or ``max_new_tokens``
  (the authors: 50).
* **Hit rule**: at a step that emits token ``w``, a head hits when its top-1 attended key lies in the
  answer span and holds ``w``; each hit adds ``1 / |span|``.
* **Success rule**: a trial counts only if ROUGE-1 recall of the answer's words in the output is
  above 0.5 (the authors' ``rouge1.recall * 100 > 50``; word counts clipped as in ROUGE; we do not
  stem, they use the Porter stemmer). The score is the mean over counted trials (``n``); NaN with a
  reason if none counted.

``retrieval_tf`` is the earlier forced-copy probe, kept as a separately named variant for small
models that rarely retrieve on their own: the needle is ``" The secret phrase is: w1 ... wn."`` with
``n`` random words, the question ends with ``"The secret phrase is:"``, the true phrase is fed
(teacher forcing) and every trial counts; each answer position is one step. It forces a verbatim
copy, so its mid-range scores run higher than the authors' (issue 18: 1.3-1.8x).

CPU defaults use contexts of a few hundred tokens; the paper's setting (GPU) is context lengths
from 1k up to the model's limit (e.g. 4k-50k+) at depths 0 %..100 % in 10 % steps.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from attendome.atlas import registry as S
from attendome.atlas.rows import nan_rows, rows_from_samples
from attendome.core.capture import base_model, capture_attention
from attendome.core.text import NEEDLE_WORDS, QA_NEEDLES, QA_SLOTS, pydoc_documents
from attendome.core.tokens import special_affixes
from attendome.core.progress import progress as progress_bar

__all__ = ["NEEDLE_WORDS", "Trial", "make_trials", "make_qa_trials", "teacher_forced_hits", "generation_hits",
           "rouge1_recall", "retrieval", "retrieval_tf"]

QUESTION = "\n\nQuestion: What is the secret phrase in the text above?\nAnswer: The secret phrase is:"
NEEDLE_PRE = " The secret phrase is:"
QA_QUESTION = "\nBased on the content of the book, Question: {question}\nAnswer:"  # the authors' wording


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


def _sentence_ends(tokenizer, ids) -> set[int]:
    """The ids among ``ids`` whose text ends a sentence (ends in ``.`` once trailing space is stripped)."""
    return {i for i in set(ids) if tokenizer.decode([i]).rstrip().endswith(".")}


def _answer_span(ids: list[int], lo: int, hi: int, variants: list[list[int]]) -> tuple[int, int]:
    """The window of ``ids[lo:hi]`` (the needle) that best matches the answer (the authors' fuzzy span).

    For each tokenization of the answer in ``variants`` (with and without a leading space), every
    window of its length is scored by the share of the answer's distinct ids it contains; the best
    window wins (the first on ties).
    """
    best = (-1.0, lo, lo)
    for a in variants:
        want, n = set(a), len(a)
        for i in range(lo, hi - n + 1):
            share = len(set(ids[i:i + n]) & want) / len(want)
            if share > best[0]:
                best = (share, i, i + n)
    return best[1], best[2]


def make_qa_trials(tokenizer, rp) -> list[Trial]:
    """Trials of the authors' protocol (module docstring), grid ``context_lengths x depths x
    needles_per_cell`` (seeded). ``Trial.answer`` holds the answer span's ids in the prompt and
    ``Trial.words`` the answer's words (the ROUGE reference)."""
    hay = _haystack_ids(tokenizer)
    rng = np.random.default_rng(rp.seed)
    prefix, _ = special_affixes(tokenizer, bos_fallback=False)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    trials = []
    for n_ctx in rp.context_lengths:
        for depth in rp.depths:
            for _ in range(rp.needles_per_cell):
                needle_t, question_t, answer_t = QA_NEEDLES[int(rng.integers(len(QA_NEEDLES)))]
                slots = {k: str(v[int(rng.integers(len(v)))]) for k, v in sorted(QA_SLOTS.items())}
                needle_text, question, answer = (x.format(**slots) for x in (needle_t, question_t, answer_t))
                needle = enc(" " + needle_text)
                n_hay = n_ctx - len(needle)
                if n_hay < 1 or n_hay >= len(hay):
                    raise ValueError(f"context length {n_ctx} does not fit a needle of {len(needle)} tokens")
                start = int(rng.integers(0, len(hay) - n_hay))
                window = hay[start:start + n_hay].tolist()
                cut = n_hay if depth >= 1 else int(depth * n_hay)
                if cut < n_hay:  # back to the nearest sentence end, as the authors do
                    ends = _sentence_ends(tokenizer, window[:cut])
                    while cut > 0 and window[cut - 1] not in ends:
                        cut -= 1
                ids = prefix + window[:cut] + needle + window[cut:] + enc(QA_QUESTION.format(question=question))
                lo = len(prefix) + cut
                s, e = _answer_span(ids, lo, lo + len(needle), [enc(" " + answer), enc(answer)])
                trials.append(Trial(prompt=torch.tensor(ids), answer=torch.tensor(ids[s:e]), span=(s, e),
                                    words=tuple(_words(answer)), context_length=n_ctx, depth=float(depth)))
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
    """Run ``model`` with attention implementation ``impl`` (e.g. ``sdpa``) inside the block.

    A model whose ``transformers`` class refuses ``impl`` (Gemma 2 has no SDPA path) keeps its
    current implementation, with a warning: the numbers are the same (the prefill captures no
    attention), only memory grows with the square of the context instead of linearly.
    """
    old = getattr(model.config, "_attn_implementation", "eager")
    switched = False
    if old != impl:
        try:
            model.set_attn_implementation(impl)
            switched = True
        except (ValueError, NotImplementedError) as err:
            warnings.warn(f"{type(model).__name__} cannot run attention implementation {impl!r} ({err}); "
                          f"the retrieval prefill stays on {old!r} (same numbers, memory quadratic in the "
                          "context length)", stacklevel=3)
    try:
        yield
    finally:
        if switched:
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
    """Lower-cased alphanumeric words (ROUGE's tokenization, without its stemmer)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge1_recall(reference_words, text: str) -> float:
    """ROUGE-1 recall in [0, 1]: the share of the reference's words found in ``text``, counts clipped
    (a word twice in the reference needs two in the output). Higher = more of the answer said."""
    ref = Counter(reference_words)
    got = Counter(_words(text))
    return sum((ref & got).values()) / max(1, sum(ref.values()))


@torch.no_grad()
def generation_hits(lm, trial: Trial, max_new_tokens: int, memory_efficient: bool = True,
                    stop_at_newline: bool = False) -> tuple[np.ndarray, float, str]:
    """Greedy generation with per-step top-1 keys.

    With ``memory_efficient`` the prompt but its last token is prefilled with sdpa (no attention
    probabilities, no vocabulary logits); every step that is scored runs eager on one query row.
    Decoding stops after an EOS, after a token whose text holds a newline once the output has begun
    (``stop_at_newline``, the authors' rule; small models often open the answer with a line break,
    which would end it empty), or after ``max_new_tokens``; the stopping step is scored too.

    Returns:
        ``(scores (layers, heads), recall, generated_text)``: per head the hits divided by the answer
        span's length, and the ROUGE-1 recall of ``trial.words`` in the output (:func:`rouge1_recall`).
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
            if w == eos or (stop_at_newline and "\n" in lm.tokenizer.decode([w])
                            and lm.tokenizer.decode(emitted).strip()):
                break
            nxt = torch.tensor([[w]], device=lm.device)
            out = lm.model(input_ids=nxt, use_cache=True, **{_cache_kw(lm.model): _cache_of(out)})
    text = lm.tokenizer.decode(emitted, skip_special_tokens=True)
    top = torch.stack(steps, dim=-1)  # (layers, heads, steps)
    ids = torch.cat([trial.prompt, torch.tensor(emitted)])
    em = torch.tensor(emitted)
    scores = np.stack([_hits(top[layer], ids, em, trial.span).numpy() for layer in range(lm.n_layers)])
    return scores / len(trial.answer), rouge1_recall(trial.words, text), text


def _rows(lm, name: str, per_trial: list[np.ndarray], method: str, settings: dict, reason: str) -> list[dict]:
    if not per_trial:
        return nan_rows(lm, name, reason, method, settings)
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


SUCCESS_RECALL = 0.5
"""A trial counts when ROUGE-1 recall is above this (the authors: ``rouge1.recall * 100 > 50``)."""


@S.register(
    "retrieval",
    kind="behaviour",
    value_range=(0.0, 1.0),
    causal_only=True,
    definition="Wu et al. 2024, the authors' protocol: natural-language needle and question, greedy decoding "
               "to a newline; share of the answer span's tokens the head copies (top-1) while the model "
               "retrieves it (ROUGE-1 recall > 0.5)",
)
def retrieval(lm, params, progress: bool = True) -> list[dict]:
    """Retrieval score by the authors' protocol (module docstring); only retrieved trials count."""
    rp = params.retrieval
    trials = make_qa_trials(lm.tokenizer, rp)
    kept = []
    for t in progress_bar(trials, f"{lm.key}: retrieval (generation)", enabled=progress):
        scores, recall, _ = generation_hits(lm, t, rp.max_new_tokens, rp.memory_efficient, stop_at_newline=True)
        if recall > SUCCESS_RECALL:
            kept.append(scores)
    settings = dict(
        probe="needle_in_haystack_qa",
        needles="natural-language statements with open questions (attendome.core.text.QA_NEEDLES)",
        context_lengths=list(rp.context_lengths),
        depths=list(rp.depths),
        depth_rule="moved back to the nearest sentence end",
        needles_per_cell=rp.needles_per_cell,
        seed=rp.seed,
        n_trials=len(trials),
        variant="generation",
        max_new_tokens=rp.max_new_tokens,
        stop="newline, eos or max_new_tokens",
        n_retrieved=len(kept),
        success_rule=f"rouge1_recall>{SUCCESS_RECALL} (no stemmer)",
    )
    return _rows(
        lm,
        "retrieval",
        kept,
        "probe:needle_qa_generation",
        settings,
        f"model retrieved the answer in 0 of {len(trials)} trials (greedy to a newline, ROUGE-1 recall > "
        f"{SUCCESS_RECALL})",
    )


@S.register(
    "retrieval_tf",
    kind="behaviour",
    value_range=(0.0, 1.0),
    causal_only=True,
    definition="forced-copy variant: needle 'The secret phrase is: w1..wn', the phrase fed (teacher-forced); "
               "fraction of phrase tokens the head copies (top-1) from the needle; every trial counts",
)
def retrieval_tf(lm, params, progress: bool = True) -> list[dict]:
    """Forced-copy, teacher-forced retrieval score (module docstring); every trial counts."""
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
