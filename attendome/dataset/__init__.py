"""The seed's dataset API, kept for its users, as a thin layer over :mod:`attendome.atlas.score`.

``InductionHeadClassifier`` and ``ModelLoader`` behave as in the seed README; the scores are the
same numbers the ``heads`` DVC stage writes (same probe, same scorer registry).

May import: :mod:`attendome.core`, :mod:`attendome.atlas`. Must not import: ``clone``, ``space``,
``stage`` (the seed API is a user-facing layer over the atlas, nothing more).
"""

from attendome.dataset.classifier import InductionHeadClassifier, classify_scores
from attendome.dataset.loader import ModelLoader

__all__ = ["InductionHeadClassifier", "ModelLoader", "classify_scores"]
