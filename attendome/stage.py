"""The one command-line skeleton shared by every ``stages/*.py`` script."""

from __future__ import annotations

import argparse

from attendome.params import Params, load_params

__all__ = ["stage_args"]


def stage_args(description: str | None, per_model: bool = False) -> tuple[Params, str | None]:
    """Parse ``[model] [--params PATH]``, load and validate params (before any model loads).

    Returns:
        ``(params, model_key)``; ``model_key`` is None unless ``per_model``. An unknown model key is
        refused with the list of known ones.
    """
    ap = argparse.ArgumentParser(description=description)
    if per_model:
        ap.add_argument("model", help="model key in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    key = getattr(args, "model", None)
    if key is not None:
        params.model(key)
    return params, key
