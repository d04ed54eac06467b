"""Offline text: the Python standard library's documentation topics, and a list of common words.

``pydoc_data.topics.topics`` ships with every CPython (about 465 KB of reference prose in 79
topics). Each topic is one source document; documents are returned sorted by name so the order is
the same on every machine.
"""

from __future__ import annotations

__all__ = ["pydoc_documents", "NEEDLE_WORDS"]

# Common English words, each a single word in every tokenizer in play: needles of the retrieval
# probe and the words of the generated repeat-probe documents of the Phase 1 corpus.
NEEDLE_WORDS = (
    "apple river copper violin lantern meadow falcon pepper marble harbor canyon velvet "
    "thunder walnut ribbon glacier saddle orchid pickle compass tiger basket candle dragon "
    "feather garlic hammer island jacket kettle ladder mirror needle orange parrot quartz "
    "rocket silver tomato umbrella wagon yellow zebra anchor biscuit cactus dolphin engine "
    "forest goblet helmet igloo jungle kayak lemon magnet noodle oyster pillow rabbit sponge "
    "turtle vessel window yogurt banjo cobalt donkey emerald fossil ginger hazel ivory jasmine "
    "koala lilac mango nectar olive peanut quiver raven saffron tulip violet willow"
).split()


def pydoc_documents() -> list[tuple[str, str]]:
    """``[(doc_id, text), ...]`` sorted by ``doc_id`` (the pydoc topic name)."""
    from pydoc_data.topics import topics

    return [(f"pydoc:{k}", topics[k]) for k in sorted(topics)]
