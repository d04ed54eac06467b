"""Typed records of the leaderboard (``metrics/leaderboard.json``), written by :mod:`.run` and read
by :mod:`.plots`, :mod:`attendome.report` and :mod:`attendome.explore.site`.

They are ``TypedDict`` s: the JSON file stays plain dictionaries, and every reader names the fields
it uses through these types instead of bare string keys. :func:`check_record` validates a record
read back from disk against its type (required keys present, nested records checked), so that a
file written by another version of the code is refused with the missing key named instead of
failing deep inside a reader.
"""

from __future__ import annotations

import typing
from typing import Any, TypedDict

__all__ = ["Stat", "MapStat", "ScopeSummary", "Classification", "TypeEntry", "Pool", "Difference", "InductionMass",
           "Reconstruction", "Board", "check_record"]


class Stat(TypedDict):
    """One per-query metric over the queries of a scope: mean, exact chance level and 95 % CIs
    (over queries, and two-level over models then queries)."""

    mean: float | None
    chance: float | None
    ci95: list[float | None]
    ci95_by_model: list[float | None]


class KvCollapsed(TypedDict):
    """mAP with the queries of one (model, layer, KV group) merged into one."""

    mean: float | None
    n_groups: int


class MapNull(TypedDict):
    """Label-permutation null of the mAP (labels shuffled within each model)."""

    n_permutations: int
    mean: float | None
    p95: float | None
    p_value: float | None


class MapStat(Stat, total=False):
    """The mAP: a :class:`Stat` plus the KV-cluster CI, the KV-collapsed value, the spread over
    replicates and the permutation null."""

    ci95_by_kv_group: list[float | None]
    kv_collapsed: KvCollapsed
    seed_sd: float | None
    n_seeds: int
    null: MapNull


class ScopeSummary(TypedDict):
    """Retrieval of one head type in one scope (``all``, ``cross_family``). Besides these keys it
    holds ``"<precision|recall|hit>@<k>": Stat`` for every k of ``leaderboard.ks``."""

    n_queries: int
    n_query_models: int
    map: MapStat


class Classification(TypedDict, total=False):
    """Leave-one-model-out logistic regression: F1 (mean over replicates and spread), mean AP per
    held-out model with its chance level, and the permutation null."""

    f1: float | None
    f1_seed_sd: float | None
    mean_ap: float | None
    mean_ap_chance: float | None
    ap_by_model: dict[str, dict[str, Any]]
    null: dict[str, Any]


class TypeEntry(TypedDict, total=False):
    """Everything one method scores on one head type."""

    all: ScopeSummary
    cross_family: ScopeSummary
    classification: Classification
    controls: dict[str, Any]


class Pool(TypedDict):
    """The heads a head type is queried over: positives per model, pool size, models."""

    positives_by_model: dict[str, int]
    n_pool: int
    n_positive: int
    pool_models: list[str]


class Difference(TypedDict):
    """Paired difference of mAP between two methods on the same queries, with paired bootstrap CIs."""

    mean: float | None
    n_queries: int
    ci95_by_model: list[float | None]
    ci95_by_kv_group: list[float | None]


class InductionMass(TypedDict):
    """Mean attention mass of a model's induction heads on the induction target, held-out repeat probes."""

    n_heads: int
    universal: float | None
    cloner: float | None
    true: float | None
    positional: float | None


class Reconstruction(TypedDict):
    """Held-out KL of the universal encoder and the cloners beside the baselines, for one model."""

    universal_kl: float | None
    universal_kl_sd: float | None
    cloner_kl: float | None
    cloner_kl_sd: float | None
    positional_kl: float | None
    uniform_kl: float | None
    universal_over_cloner: float | None
    universal_over_cloner_ci95: list[float | None]
    cloner_over_positional: float | None
    universal_over_positional: float | None
    control: bool
    induction_mass: InductionMass | None


class ModelFamily(TypedDict):
    """A model's family (catalogue ``family``, default its key) and whether it is a negative control;
    retrieval pairs of one family form the ``same_family`` scope, all others ``cross_family``."""

    family: str
    control: bool


class Board(TypedDict, total=False):
    """The whole leaderboard (``metrics/leaderboard.json``)."""

    types: list[str]
    families: dict[str, ModelFamily]
    pools: dict[str, Pool]
    methods: dict[str, dict[str, TypeEntry]]
    atlas_positives: dict[str, dict[str, int | None]]
    differences: dict[str, dict[str, Difference]]
    reconstruction: dict[str, Reconstruction]
    transfer: dict[str, Any]
    training: dict[str, Any]
    outliers: dict[str, Any]
    correspondence: dict[str, Any]


_REQUIRED_BOARD = ("types", "pools", "methods", "differences", "reconstruction")


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def check_record(value: Any, record: type, where: str = "leaderboard") -> None:
    """Raise ``KeyError``/``TypeError`` naming the first key of ``value`` that does not fit ``record``.

    Checks that ``value`` is a dict holding the record's required keys (for :class:`Board`: those
    every leaderboard has), and recurses into nested records and into ``dict[str, <record>]`` fields.
    """
    if not isinstance(value, dict):
        raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
    required = _REQUIRED_BOARD if record is Board else record.__required_keys__
    missing = [k for k in required if k not in value]
    if missing:
        raise KeyError(f"{where}: missing {missing[0]!r}")
    hints = typing.get_type_hints(record)
    for key, sub in value.items():
        tp = hints.get(key)
        if tp is None:
            continue
        if _is_record(tp):
            check_record(sub, tp, f"{where}.{key}")
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) is dict and args and isinstance(sub, dict):
            inner = args[1]
            if _is_record(inner):
                for k, v in sub.items():
                    check_record(v, inner, f"{where}.{key}.{k}")
            elif typing.get_origin(inner) is dict and _is_record(typing.get_args(inner)[1]):
                for k, v in sub.items():
                    for k2, v2 in v.items():
                        check_record(v2, typing.get_args(inner)[1], f"{where}.{key}.{k}.{k2}")
