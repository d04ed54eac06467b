"""The one long-format schema of head scores, and its validator.

Every stage that writes per-head scores writes this table (tidy: one row per model x layer x head
x score). ``value`` is NaN exactly when the score does not apply, and then ``reason`` says why.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

__all__ = ["SCORE_COLUMNS", "validate_scores"]

SCORE_COLUMNS: dict[str, str] = {
    "model": "string",          # model key in params.yaml
    "layer": "int64",           # 0-based layer index
    "head": "int64",            # 0-based query-head index within the layer
    "score_name": "string",     # head type (scorer registry key)
    "value": "float64",         # the score (NaN when undefined; see reason)
    "stderr": "float64",        # standard error across probe items (NaN for weight scores)
    "n": "int64",               # probe items averaged (0 for weight scores)
    "method": "string",         # how the number was produced, e.g. 'probe:repeated_tokens'
    "settings": "string",       # probe settings (JSON) behind the number
    "scorer_version": "int64",  # registry version of the definition
    "reason": "string",         # why value is NaN ('' otherwise)
}


def validate_scores(df: pd.DataFrame, value_ranges: Mapping[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Check and coerce a head-score table to :data:`SCORE_COLUMNS`.

    Args:
        df: the table.
        value_ranges: ``{score_name: (lo, hi)}`` closed ranges to check values against (the scorer
            registry's, see :func:`attendome.atlas.scorers.validate_scores`); names not in it are
            not range-checked.

    Raises:
        ValueError: missing columns, duplicate (model, layer, head, score_name) rows, values out of
            a scorer's range, or NaN values without a reason.
    """
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"head-score table lacks columns {missing}")
    out = df.copy()
    for col, dtype in SCORE_COLUMNS.items():
        out[col] = out[col].astype(dtype)
    key = ["model", "layer", "head", "score_name"]
    dup = out.duplicated(key)
    if dup.any():
        raise ValueError(f"duplicate rows for {out.loc[dup, key].head(3).to_dict('records')}")
    nan = out["value"].isna()
    if (nan & (out["reason"].fillna("") == "")).any():
        raise ValueError("NaN scores must carry a reason")
    for name, grp in out[~nan].groupby("score_name"):
        if value_ranges and name in value_ranges:
            lo, hi = value_ranges[name]
            bad = grp[(grp["value"] < lo - 1e-6) | (grp["value"] > hi + 1e-6)]
            if len(bad):
                raise ValueError(f"{name}: values outside [{lo}, {hi}]: {bad['value'].head(3).tolist()}")
    return out
