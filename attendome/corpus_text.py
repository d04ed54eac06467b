"""Offline English prose: the Python standard library's documentation topics.

``pydoc_data.topics.topics`` ships with every CPython (about 465 KB of reference prose in 79
topics). Each topic is one source document; documents are returned sorted by name so the order is
the same on every machine.
"""

from __future__ import annotations

__all__ = ["pydoc_documents"]


def pydoc_documents() -> list[tuple[str, str]]:
    """``[(doc_id, text), ...]`` sorted by ``doc_id`` (the pydoc topic name)."""
    from pydoc_data.topics import topics

    return [(f"pydoc:{k}", topics[k]) for k in sorted(topics)]
