"""Offline text: the Python standard library's documentation topics, and a list of common words.

``pydoc_data.topics.topics`` ships with every CPython (about 465 KB of reference prose in 79
topics). Each topic is one source document; documents are returned sorted by name so the order is
the same on every machine.
"""

from __future__ import annotations

__all__ = ["pydoc_documents", "NEEDLE_WORDS", "QA_NEEDLES", "QA_SLOTS"]

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


# Natural-language needles of the retrieval probe, in the style of Wu et al.'s
# (``haystack_for_detect/needles.jsonl`` of nightdessert/Retrieval_Head: a statement, an open
# question about it, and the "real needle" -- the span of the statement that answers it). Each is a
# template whose slots are filled from ``QA_SLOTS`` (seeded), so the answers are arbitrary
# combinations no model knows from pretraining: it can only answer by retrieving them.
QA_NEEDLES = (
    ("The best thing to do in {city} is to {activity}.",
     "What is the best thing to do in {city}?",
     "{activity}"),
    ("{person} is disliked by everyone because {reason}.",
     "Why is {person} disliked by everyone?",
     "because {reason}"),
    ("The secret ingredient of the {dish} served in {city} is {ingredient}.",
     "What is the secret ingredient of the {dish} served in {city}?",
     "{ingredient}"),
)
QA_SLOTS = {
    "city": ("Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Krakow", "Quito", "Perth", "Tunis", "Riga"),
    "activity": (
        "take a walk along the old harbor and drink a cup of mint tea at sunset",
        "rent a small boat and watch the herons on the lake in the morning",
        "climb the hill behind the market and eat roasted chestnuts on the stairs",
        "visit the copper museum and buy a violin from the street seller",
        "sit in the orchid garden and read a book about glaciers",
        "ride the yellow tram to the end of the line and count the lanterns",
    ),
    "person": ("Mr Green", "Ms Harlow", "Dr Finch", "Captain Moss", "Mrs Pike", "Professor Quill"),
    "reason": (
        "he is a mean person and also he cannot ride a horse or drive a car",
        "she always takes the last biscuit and never washes the kettle",
        "he sings loudly in the library and borrows umbrellas without asking",
        "she parks her wagon across the gate and feeds the ravens at night",
        "he tells long stories about his pickle collection at every dinner",
    ),
    "dish": ("noodle soup", "lemon cake", "bean stew", "rice pudding", "onion pie"),
    "ingredient": (
        "a spoon of smoked saffron from the northern hills",
        "three drops of walnut oil and a pinch of ginger",
        "crushed mango seeds dried in the sun for a week",
        "a handful of roasted peanuts soaked in jasmine tea",
        "grated quince mixed with a little cobalt blue salt",
    ),
}


def pydoc_documents() -> list[tuple[str, str]]:
    """``[(doc_id, text), ...]`` sorted by ``doc_id`` (the pydoc topic name)."""
    from pydoc_data.topics import topics

    return [(f"pydoc:{k}", topics[k]) for k in sorted(topics)]
