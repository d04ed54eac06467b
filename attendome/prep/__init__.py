"""Step 2a, data preparation for Phase 1: prompts, shared segments, segment attention, features.

Owns: the prompt corpus split by document (:mod:`.corpus`, stage ``corpus``), alignment of all
tokenizers on shared segments (:mod:`.align`), segment attention and encoder features
(:mod:`.segattn`, stages ``attention`` and ``features``), the stage inputs (:mod:`.inputs`) and the
attention file format that later steps read (:mod:`.store`).

May import: :mod:`attendome.core`. Must not import: ``atlas``, ``clone``, ``space``, ``board``,
``dataset``, ``stage``.
"""
