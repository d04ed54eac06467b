"""Step 3, the shared space: universal head embeddings, baselines and the leaderboard.

Owns: the universal encoder (:mod:`.universal`, stage ``embed``), baseline embeddings
(:mod:`.baselines`, stage ``baselines``), the leaderboard metrics (:mod:`.leaderboard`) and the
stage bodies (:mod:`.run`, stages ``embed``, ``baselines``, ``leaderboard``).

May import: :mod:`attendome.core`, :mod:`attendome.atlas`, :mod:`attendome.clone`. Must not import:
``dataset``, ``stage``.
"""
