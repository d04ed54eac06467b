"""Attendome: do attention heads of different transformer models live in one shared space?

Subpackages follow the pipeline; imports only point down (core <- atlas, prep <- clone <- space <-
board <- explore), and each stage's code dependencies in ``dvc.yaml`` are exactly the modules it imports
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
* :mod:`attendome.explore` -- step 5, the head explorer (an offline static site) and the paper
  figures (stage ``explore``).
* :mod:`attendome.dataset` -- the seed's API and CLI (``InductionHeadClassifier``,
  ``ModelLoader``), a user-facing layer over the atlas.
* :mod:`attendome.stage` -- the command-line skeleton of every ``stages/*.py`` script.
* :mod:`attendome.report` -- the generated report (stage ``report``).

``tests/unit/test_layout.py`` checks the direction of every import and that there is no circle.
"""

__version__ = "0.1.0"

# Bit-identical outputs on every x86-64 machine with AVX2: every stage that computes with floats runs
# torch's vectorised kernels, MKL, oneDNN and OpenBLAS on their AVX2 code paths (dvc.yaml sets these
# before `python` in those stages' commands; the libraries otherwise choose kernels by CPU, and
# AVX-512 machines round differently: measured, ATEN_CPU_CAPABILITY alone changes data/features and
# data/attention), on fixed thread counts (runtime.threads, clone.threads, embed.threads).
REPRODUCIBLE_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                    "OPENBLAS_CORETYPE": "Haswell"}
