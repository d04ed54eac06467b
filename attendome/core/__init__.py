"""The core every pipeline step stands on.

Owns: validated params (:mod:`.params`), the model registry and loading (:mod:`.models`), attention
capture by hooks (:mod:`.capture`), tokenizer templates (:mod:`.tokens`), offline text
(:mod:`.text`), atomic pickle-free I/O (:mod:`.io`), the head-score table schema (:mod:`.tables`)
and MLflow tracking (:mod:`.tracking`).

Must not import: anything else of ``attendome`` (``atlas``, ``clone``, ``space``, ``dataset``,
``stage``). Everything above imports from here, never the other way round.
"""
