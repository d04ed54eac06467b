"""The one command-line skeleton shared by every ``stages/*.py`` script (the top layer).

It sits above every subpackage, so it may check params against what the layers below own (the
scorer registry of :mod:`attendome.atlas`) before any model loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attendome.core.params import Params, load_params

__all__ = ["stage_args", "load_checked_params"]


def load_checked_params(path: str | Path = "params.yaml", scorers: bool = True) -> Params:
    """:func:`~attendome.core.params.load_params` plus the checks that need the scorer registry.

    Args:
        path: the params file.
        scorers: also check ``heads.scorers`` against the registry of :mod:`attendome.atlas` (the
            atlas stages do; the stages of later steps never import the atlas code, so that a change
            to a scorer does not rerun them).

    Raises:
        ParamsError: invalid params, naming the offending key.
    """
    params = load_params(path)
    if scorers:
        from attendome.atlas.scorers import check_scorer_names

        check_scorer_names(params.heads.scorers, "heads.scorers")
    return params


def stage_args(description: str | None, per_model: bool = False, scorers: bool = False) -> tuple[Params, str | None]:
    """Parse ``[model] [--params PATH]``, load and validate params (before any model loads).

    Args:
        description: the stage's help text.
        per_model: the stage takes a model key.
        scorers: check scorer names against the atlas registry (see :func:`load_checked_params`).

    Returns:
        ``(params, model_key)``; ``model_key`` is None unless ``per_model``. An unknown model key is
        refused with the list of known ones.
    """
    ap = argparse.ArgumentParser(description=description)
    if per_model:
        ap.add_argument("model", help="model key in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_checked_params(args.params, scorers)
    key = getattr(args, "model", None)
    if key is not None:
        params.model(key)
    return params, key
