"""Step 2b, Phase 1 cloning: reproduce each head's attention from a frozen encoder's features.

Owns: per-model segment data and batches (:mod:`.data`), the positional habits and baselines
(:mod:`.positional`), losses (:mod:`.losses`), the batched bilinear predictor (:mod:`.model`),
held-out evaluation (:mod:`.evaluate`), the one training loop (:mod:`.training`), summaries and
curves (:mod:`.summary`) and the ``clone`` stage body (:mod:`.run`).

May import: :mod:`attendome.core`, :mod:`attendome.prep` (the attention file format, the split
check). Must not import: ``atlas``, ``space``, ``board``, ``dataset``, ``stage``.
"""
