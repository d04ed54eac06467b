"""The one command-line skeleton shared by every ``stages/*.py`` script (the top layer).

It imports only :mod:`attendome.core`, so every stage depends on it without depending on any step's
code; checks that need a step's code (the scorer registry of :mod:`attendome.atlas`) are passed in
by the stage script (``check=``) and run before any model loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from attendome.core.errors import EXPECTED_ERRORS
from attendome.core.params import Params, load_params

__all__ = ["stage_args", "load_checked_params", "run_stage", "say", "set_threads", "EXPECTED_ERRORS"]


def set_threads(threads: int = 0) -> int:
    """Set the stage's CPU threads once: ``threads``, or every core available to the process; for
    torch (and the MKL it calls) and for the BLAS under numpy and scikit-learn (OpenBLAS, through
    ``threadpoolctl``). Both split reductions by thread, so a machine's own default (its core count,
    ``OMP_NUM_THREADS``) would otherwise change the last bits of the outputs: measured, numpy's
    thread count alone changed the RSA and cloner baseline embeddings.

    Returns:
        The number of threads set.
    """
    import os

    import torch
    from threadpoolctl import threadpool_limits

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, threads or available)
    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")  # kept for the rest of the process
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


def load_checked_params(path: str | Path = "params.yaml", check: Callable[[Params], None] | None = None) -> Params:
    """:func:`~attendome.core.params.load_params` plus ``check(params)`` (e.g.
    :func:`attendome.atlas.scorers.check_params`, the scorer names against the registry).

    Raises:
        ParamsError: invalid params, naming the offending key.
    """
    params = load_params(path)
    if check is not None:
        check(params)
    return params


def stage_args(description: str | None, per_model: bool = False,
               check: Callable[[Params], None] | None = None) -> tuple[Params, str | None]:
    """Parse ``[model] [--params PATH]``, load and validate params (before any model loads).

    Args:
        description: the stage's help text.
        per_model: the stage takes a model key.
        check: more params checks that need a step's code (see :func:`load_checked_params`).

    Returns:
        ``(params, model_key)``; ``model_key`` is None unless ``per_model``. An unknown model key is
        refused with the list of known ones.
    """
    ap = argparse.ArgumentParser(description=description)
    if per_model:
        ap.add_argument("model", help="model key in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_checked_params(args.params, check)
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
