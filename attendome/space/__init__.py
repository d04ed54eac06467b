"""Step 3, the shared space: universal head embeddings and the baseline embeddings.

Owns: the universal encoder (:mod:`.universal`) and its stage body (:mod:`.embed`, stage ``embed``),
baseline embeddings (:mod:`.baselines`, stage ``baselines``).

May import: :mod:`attendome.core`, :mod:`attendome.prep`, :mod:`attendome.clone`. Must not import:
``atlas``, ``board``, ``dataset``, ``stage``.
"""
