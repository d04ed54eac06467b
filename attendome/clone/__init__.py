"""Step 2, Phase 1 cloning: reproduce each head's attention from a frozen encoder's features.

Owns: the prompt corpus split by document (:mod:`.corpus`, stage ``corpus``), alignment of all
tokenizers on shared segments (:mod:`.align`), segment attention and encoder features
(:mod:`.segattn`, stages ``attention`` and ``features``), the stage inputs (:mod:`.inputs`), the
batched bilinear cloner (:mod:`.cloner`) and the ``clone`` stage body (:mod:`.run`).

May import: :mod:`attendome.core`, :mod:`attendome.atlas`. Must not import: ``space``,
``dataset``, ``stage``.
"""
