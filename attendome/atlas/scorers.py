"""The filled scorer registry: importing this module registers every built-in head type.

Order of registration (and of :data:`REGISTRY`): the pattern scorers (:mod:`.patterns`), copying
(:mod:`.copying`), retrieval (:mod:`.retrieval`). Also the checks that need the registry: score
names in params (:func:`check_scorer_names`) and value ranges of a score table
(:func:`validate_scores`).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from attendome.atlas import patterns as _patterns  # noqa: F401, I001  (registers induction, ...)
from attendome.atlas import copying as _copying  # noqa: F401  (registers copying_ov, copying)
from attendome.atlas import retrieval as _retrieval  # noqa: F401  (registers retrieval, retrieval_tf)
from attendome.atlas.registry import REGISTRY, ProbeLayout, Scorer, available, get, register
from attendome.core import tables
from attendome.core.params import ParamsError

__all__ = ["REGISTRY", "ProbeLayout", "Scorer", "available", "get", "register", "check_scorer_names",
           "check_params", "validate_scores"]


def check_scorer_names(names: Sequence[str], key: str = "heads.scorers") -> None:
    """Refuse unknown scorer names, naming the params key and the available scorers.

    Raises:
        ParamsError: a name is not registered.
    """
    for i, name in enumerate(names):
        if name not in REGISTRY:
            raise ParamsError(f"invalid params.yaml:\n  {key}.{i}: unknown scorer {name!r}; "
                              f"available: {available()}")


def check_params(params) -> None:
    """The params checks that need the registry (``heads.scorers``); stages of the atlas pass it to
    :func:`attendome.stage.stage_args`, so that the stages of later steps never import atlas code.

    Raises:
        ParamsError: an unknown scorer name.
    """
    check_scorer_names(params.heads.scorers, "heads.scorers")


def validate_scores(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`attendome.core.tables.validate_scores` with every registered scorer's value range."""
    return tables.validate_scores(df, {n: s.value_range for n, s in REGISTRY.items()})
