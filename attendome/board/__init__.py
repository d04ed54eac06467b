"""Step 4, the leaderboard: every embedding method scored against chance, baselines and nulls.

Owns: the metrics (:mod:`.metrics`: retrieval@k, AP, bootstrap CIs, permutation nulls, LOMO
classification, outliers, correspondence), the stage body (:mod:`.run`, stage ``leaderboard``)
and its figures (:mod:`.plots`).

May import: :mod:`attendome.core`, :mod:`attendome.prep` (the attention file header),
:mod:`attendome.space`. Must not import: ``atlas``, ``clone``
(the leaderboard reads their outputs, not their code), ``dataset``, ``stage``.
"""
