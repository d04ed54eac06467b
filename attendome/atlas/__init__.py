"""Step 1, the head atlas: score every head of a model for every head type, label and summarise.

Owns: the scorer registry (:mod:`.registry`, mechanism only) and its filled form
(:mod:`.scorers`), the probes (:mod:`.probes`), the scorers by kind (:mod:`.patterns`,
:mod:`.copying` with :mod:`.circuits`, :mod:`.retrieval`), score-table rows (:mod:`.rows`), the
per-model scoring loop (:mod:`.score`, stage ``heads``) and labels/summaries/heatmaps
(:mod:`.summary`, stage ``atlas``).

May import: :mod:`attendome.core`. Must not import: ``clone``, ``space``, ``dataset``, ``stage``.
Scorer modules import :mod:`.registry` and :mod:`.rows`, never :mod:`.scorers` or :mod:`.score`.
"""
