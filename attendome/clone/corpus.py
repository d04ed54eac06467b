"""Prompt sets for Phase 1/2: offline prose plus generated probes, split by source document.

Sources (``corpus.source`` in params):
  * ``pydoc`` (default, offline): the standard library's documentation topics (79 documents).
  * ``files``: the user's text files (``corpus.files``, globs); each file is one document.
  * ``hf``: a Hugging Face dataset (``corpus.hf_dataset``: name, split, column; needs ``datasets``
    and network); each row is one document.
Generated probes are added as their own documents: sequences of random common words repeated
twice (so induction behaviour shows at the word level, where all tokenizers agree).

Split: documents (never prompts) are assigned to ``train`` or ``heldout`` by a seeded permutation,
so no held-out text was seen in training; :func:`check_disjoint` verifies it from the table.
"""

from __future__ import annotations

import glob
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from attendome.core.text import NEEDLE_WORDS, pydoc_documents

__all__ = ["load_documents", "generated_documents", "chunk_document", "build_prompts", "check_disjoint",
           "text_sha256"]

WORD_RE = re.compile(r"\S+")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_documents(cp) -> list[tuple[str, str]]:
    """``[(doc_id, text)]`` from the configured source.

    Raises:
        FileNotFoundError: ``files`` globs match nothing.
        ImportError: ``hf`` without the ``datasets`` package.
    """
    if cp.source == "pydoc":
        return pydoc_documents()
    if cp.source == "files":
        paths = sorted({p for pat in cp.files for p in glob.glob(pat, recursive=True)})
        if not paths:
            raise FileNotFoundError(f"corpus.files {list(cp.files)} matched no file")
        return [(f"file:{p}", Path(p).read_text(encoding="utf-8", errors="replace")) for p in paths]
    try:
        import datasets
    except ImportError:
        raise ImportError("corpus.source 'hf' needs the `datasets` package: pip install datasets") from None
    h = cp.hf_dataset
    ds = datasets.load_dataset(h["name"], h.get("config"), split=h.get("split", "train"))
    col = h.get("column", "text")
    return [(f"hf:{h['name']}:{i}", str(r[col])) for i, r in enumerate(ds)]


def generated_documents(n: int, words_per_half: int, seed: int) -> list[tuple[str, str]]:
    """``n`` probe documents ``"w1 w2 ... wn w1 w2 ... wn"`` of random common words."""
    rng = np.random.default_rng(seed + 7919)
    docs = []
    for i in range(n):
        half = " ".join(rng.choice(NEEDLE_WORDS, size=words_per_half, replace=False))
        docs.append((f"gen:repeat:{i:04d}", f"{half} {half}"))
    return docs


def chunk_document(text: str, words: int, max_chunks: int, rng: np.random.Generator) -> list[str]:
    """Up to ``max_chunks`` non-overlapping windows of ``words`` words (original characters kept)."""
    spans = [m.span() for m in WORD_RE.finditer(text)]
    if len(spans) < max(4, words // 2):
        return []
    starts = list(range(0, max(1, len(spans) - words + 1), words))
    pick = sorted(rng.choice(starts, size=min(max_chunks, len(starts)), replace=False))
    out = []
    for s in pick:
        w = spans[s:s + words]
        out.append(text[w[0][0]:w[-1][1]])
    return out


def build_prompts(cp) -> pd.DataFrame:
    """The prompt table: ``prompt_id, doc_id, source, split, text, text_sha256``.

    Documents are split first (seeded), then chunked; generated probes are split the same way.
    """
    rng = np.random.default_rng(cp.seed)
    docs = load_documents(cp)
    gen = generated_documents(cp.n_generated, cp.generated_words, cp.seed)
    rows = []
    for family in (docs, gen):
        ids = [d for d, _ in family]
        order = rng.permutation(len(ids))
        n_held = int(round(cp.held_out_fraction * len(ids)))
        held = {ids[i] for i in order[:n_held]}
        for doc_id, text in family:
            chunks = [text] if doc_id.startswith("gen:") else chunk_document(
                text, cp.prompt_words, cp.max_prompts_per_doc, rng)
            for k, chunk in enumerate(chunks):
                rows.append(dict(prompt_id=f"{doc_id}#{k}", doc_id=doc_id, source=doc_id.split(":")[0],
                                 split="heldout" if doc_id in held else "train", text=chunk,
                                 text_sha256=text_sha256(chunk)))
    df = pd.DataFrame(rows)
    check_disjoint(df)
    return df


def check_disjoint(prompts: pd.DataFrame) -> None:
    """Verify that no held-out document or text appears in the training split.

    Raises:
        ValueError: a document id or an identical text is in both splits.
    """
    tr, ho = prompts[prompts.split == "train"], prompts[prompts.split == "heldout"]
    docs = set(tr.doc_id) & set(ho.doc_id)
    if docs:
        raise ValueError(f"documents in both splits: {sorted(docs)[:5]}")
    texts = set(tr.text_sha256) & set(ho.text_sha256)
    if texts:
        raise ValueError(f"{len(texts)} held-out prompt texts also occur in training")
