"""The one command-line skeleton shared by every ``stages/*.py`` script (the top layer).

It sits above every subpackage, so it may check params against what the layers below own (the
scorer registry of :mod:`attendome.atlas`) before any model loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attendome.core.errors import EXPECTED_ERRORS
from attendome.core.params import Params, load_params

__all__ = ["stage_args", "load_checked_params", "run_stage", "say", "set_threads", "EXPECTED_ERRORS"]


def set_threads(threads: int = 0) -> int:
    """Set torch's CPU threads once for the stage: ``threads``, or every core available to the process.

    Returns:
        The number of threads set.
    """
    import os

    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, threads or available)
    torch.set_num_threads(n)
    return n


def say(message: str) -> None:
    """One ``[attendome] ...`` line on standard error (a stage's summary: what it read, wrote, found)."""
    import sys

    print(f"[attendome] {message}", file=sys.stderr, flush=True)


def run_stage(main) -> None:
    """Run a stage's ``main``; an expected error (bad params, unavailable weights, missing or corrupt
    inputs) is printed as one ``error: ...`` line with exit status 2. Anything else is a bug and keeps
    its traceback."""
    import os
    import sys
    import time

    t0 = time.perf_counter()
    try:
        main()
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    name = os.environ.get("DVC_STAGE") or os.path.basename(sys.argv[0]).removesuffix(".py")
    print(f"[attendome] stage {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


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
    set_threads(params.runtime.threads)
    key = getattr(args, "model", None)
    if key is not None:
        params.model(key)
    return params, key


def preset_main(argv: list[str] | None = None) -> int:
    """``attendome-preset NAME [--params PATH]``: print ``models=[...]`` of a params preset.

    For ``dvc exp run -S "$(attendome-preset zoo)"``: the printed assignment replaces the list of models
    the pipeline runs. Unknown names list the presets.
    """
    import sys

    from attendome.core.params import ParamsError

    ap = argparse.ArgumentParser(prog="attendome-preset", description=preset_main.__doc__)
    ap.add_argument("name", help="a key of `presets` in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.name not in params.presets:
        print(f"error: unknown preset {args.name!r}; params.yaml defines: {sorted(params.presets)}", file=sys.stderr)
        return 2
    print("models=[" + ",".join(params.presets[args.name]) + "]")
    return 0
