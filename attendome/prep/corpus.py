"""Prompt sets for Phase 1/2: offline prose plus generated probes, split by source document.

Sources (``corpus.source`` in params):
  * ``pydoc`` (default, offline): the standard library's documentation topics (79 documents).
  * ``files``: the user's text files (``corpus.files``, globs); each file is one document.
  * ``hf``: a Hugging Face dataset (``corpus.hf_dataset``: name, split, column; needs ``datasets``
    and network); each row is one document.
Generated probes are added as their own documents: sequences of random common words repeated
twice (so induction behaviour shows at the word level, where all tokenizers agree).

Split: documents (never prompts) are assigned to ``heldout`` (``held_out_fraction`` of them) by a
seeded permutation; of the remaining (training) documents, ``val_fraction`` form the ``val`` split
and the rest ``train``. ``val`` is what every learned method chooses its epoch (early stopping) and
settings on; ``heldout`` is only ever used for the final numbers. No document and no identical text
is in two splits; :func:`check_disjoint` verifies it from the table (checked, not assumed).
"""

from __future__ import annotations

import glob
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from attendome.core.text import NEEDLE_WORDS, pydoc_documents

__all__ = ["SPLITS", "load_documents", "generated_documents", "chunk_document", "split_documents", "build_prompts",
           "check_disjoint", "text_sha256"]

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


SPLITS = ("train", "val", "heldout")


def split_documents(ids: list[str], held_out_fraction: float, val_fraction: float,
                    rng: np.random.Generator) -> dict[str, str]:
    """``{doc_id: split}``: a seeded permutation; the first ``held_out_fraction`` of the documents
    are ``heldout``, then ``val_fraction`` of the *remaining* (training) documents are ``val``."""
    order = rng.permutation(len(ids))
    n_held = int(round(held_out_fraction * len(ids)))
    n_val = int(round(val_fraction * (len(ids) - n_held)))
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "heldout" if rank < n_held else "val" if rank < n_held + n_val else "train"
    return out


def build_prompts(cp) -> pd.DataFrame:
    """The prompt table: ``prompt_id, doc_id, source, split, text, text_sha256``.

    Documents are split first (seeded; :func:`split_documents`), then chunked; generated probes are
    split the same way, separately, so every split holds both kinds. A chunk whose exact text was
    already taken from an earlier document (documents in sorted order) is dropped, so no text can
    be in two splits.
    """
    rng = np.random.default_rng(cp.seed)
    docs = load_documents(cp)
    gen = generated_documents(cp.n_generated, cp.generated_words, cp.seed)
    rows = []
    seen: set[str] = set()
    for family in (docs, gen):
        split = split_documents([d for d, _ in family], cp.held_out_fraction, cp.val_fraction, rng)
        for doc_id, text in family:
            chunks = [text] if doc_id.startswith("gen:") else chunk_document(
                text, cp.prompt_words, cp.max_prompts_per_doc, rng)
            for k, chunk in enumerate(chunks):
                sha = text_sha256(chunk)
                if sha in seen:  # the same text in two documents (shared boilerplate): keep the first only
                    continue
                seen.add(sha)
                rows.append(dict(prompt_id=f"{doc_id}#{k}", doc_id=doc_id, source=doc_id.split(":")[0],
                                 split=split[doc_id], text=chunk, text_sha256=sha))
    df = pd.DataFrame(rows)
    check_disjoint(df)
    return df


def check_disjoint(prompts: pd.DataFrame) -> None:
    """Verify that no document and no identical text is in two splits.

    Raises:
        ValueError: a document id or an identical text is in two splits, or an unknown split name.
    """
    bad = set(prompts.split) - set(SPLITS)
    if bad:
        raise ValueError(f"unknown split(s) {sorted(bad)}; expected {SPLITS}")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            pa, pb = prompts[prompts.split == a], prompts[prompts.split == b]
            docs = set(pa.doc_id) & set(pb.doc_id)
            if docs:
                raise ValueError(f"documents in both {a} and {b}: {sorted(docs)[:5]}")
            texts = set(pa.text_sha256) & set(pb.text_sha256)
            if texts:
                raise ValueError(f"{len(texts)} prompt texts occur in both {a} and {b}")
