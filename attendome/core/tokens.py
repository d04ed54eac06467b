"""Tokenizer template facts shared by every layer: which special tokens frame a text."""

from __future__ import annotations

__all__ = ["special_affixes"]


def special_affixes(tokenizer, bos_fallback: bool = True) -> tuple[list[int], list[int]]:
    """Special token ids the tokenizer's template puts before and after a text.

    With ``bos_fallback`` (the probes' choice), a tokenizer whose template adds nothing but which
    declares a BOS gets that BOS as prefix; without it, exactly what the template adds (the retrieval
    protocol of Wu et al., who tokenize their prompts with the tokenizer's defaults).
    """
    plain = tokenizer.encode("hello world", add_special_tokens=False)
    full = tokenizer.encode("hello world", add_special_tokens=True)
    start = next((i for i in range(len(full)) if full[i : i + len(plain)] == plain), None)
    if start is None:  # template rewrote the text; fall back to BOS only
        prefix, suffix = [], []
    else:
        prefix, suffix = full[:start], full[start + len(plain) :]
    if bos_fallback and not prefix and getattr(tokenizer, "bos_token_id", None) is not None and not suffix:
        prefix = [tokenizer.bos_token_id]
    return list(prefix), list(suffix)
