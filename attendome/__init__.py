"""Attendome: do attention heads of different transformer models live in one shared space?

Subpackages follow the pipeline; imports only point down (core <- atlas <- clone <- space):

* :mod:`attendome.core` -- params, model registry and loading, attention capture, I/O, tables,
  tracking: what every step stands on.
* :mod:`attendome.atlas` -- step 1, the head atlas (stages ``heads``, ``atlas``).
* :mod:`attendome.clone` -- step 2, Phase 1 cloning (stages ``corpus``, ``features``,
  ``attention``, ``clone``).
* :mod:`attendome.space` -- step 3, Phase 2 universal embeddings, baselines and the leaderboard
  (stages ``embed``, ``baselines``, ``leaderboard``).
* :mod:`attendome.dataset` -- the seed's API and CLI (``InductionHeadClassifier``,
  ``ModelLoader``), a user-facing layer over the atlas.
* :mod:`attendome.stage` -- the command-line skeleton of every ``stages/*.py`` script.

``tests/test_layout.py`` checks the direction of every import and that there is no circle.
"""

__version__ = "0.1.0"
