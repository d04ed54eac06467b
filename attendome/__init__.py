"""Attendome: do attention heads of different transformer models live in one shared space?

Subpackages follow the pipeline; imports only point down (core <- atlas, prep <- clone <- space <-
board), and each stage's code dependencies in ``dvc.yaml`` are exactly the modules it imports
(``tests/unit/test_stage_deps.py``):

* :mod:`attendome.core` -- params, model sources, cache and loading, attention capture, I/O,
  tables, tracking: what every step stands on.
* :mod:`attendome.atlas` -- step 1, the head atlas: per-model scoring (stage ``heads``), labels and
  the atlas summary and heatmaps (stage ``atlas``).
* :mod:`attendome.prep` -- step 2a, data preparation: the corpus split by document, alignment on
  shared segments, segment attention and encoder features (stages ``corpus``, ``features``,
  ``attention``).
* :mod:`attendome.clone` -- step 2b, Phase 1 cloning (stage ``clone``).
* :mod:`attendome.space` -- step 3, Phase 2 universal embeddings and the baseline embeddings
  (stages ``embed``, ``baselines``).
* :mod:`attendome.board` -- step 4, the leaderboard (stage ``leaderboard``).
* :mod:`attendome.dataset` -- the seed's API and CLI (``InductionHeadClassifier``,
  ``ModelLoader``), a user-facing layer over the atlas.
* :mod:`attendome.stage` -- the command-line skeleton of every ``stages/*.py`` script.
* :mod:`attendome.report` -- the generated report (stage ``report``).

``tests/unit/test_layout.py`` checks the direction of every import and that there is no circle.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Bit-identical numbers on every x86 machine and thread count: torch's own vectorised kernels and
# MKL's BLAS take their AVX2 code paths everywhere (AVX-512 machines would otherwise take other ones,
# and MKL's reductions would depend on the thread count). Measured on the project's 2-core machines:
# no slower; the same bytes at 1 and 2 threads (tests/unit/test_determinism.py). Both are read once,
# when torch loads: set them yourself (e.g. ATEN_CPU_CAPABILITY=avx512) to trade this for speed.
REPRODUCIBLE_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
if "torch" in _sys.modules and any(k not in _os.environ for k in REPRODUCIBLE_CPU):
    import warnings as _warnings

    _warnings.warn("torch was imported before attendome: CPU results may differ in the last bits between "
                   "machines and thread counts (set " + " ".join(f"{k}={v}" for k, v in REPRODUCIBLE_CPU.items())
                   + " before starting Python, or import attendome first)", stacklevel=2)
for _k, _v in REPRODUCIBLE_CPU.items():
    _os.environ.setdefault(_k, _v)
