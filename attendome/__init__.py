"""Attendome: do attention heads of different transformer models live in one shared space?

Modules, one concern each: ``params`` (validated params.yaml), ``models`` (registry and loading),
``probes``/``capture``/``scorers``/``heads`` (the head atlas), ``copying``/``circuits``/``retrieval``
(further head types), ``atlas`` (labels, summaries, heatmaps), ``corpus``/``align``/``segattn``
(Phase 1 data), ``cloner`` (Phase 1 model), ``universal`` (Phase 2 model), ``baselines`` and
``leaderboard`` (evaluation), ``tracking`` (MLflow), ``io``/``tables`` (safe, atomic outputs).
"""

__version__ = "0.1.0"
