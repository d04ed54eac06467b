"""The registry of embedding methods: every way of giving each head a vector that the leaderboard scores.

Like the scorer registry, keyed by name, with metadata: ``kind`` (learned, similarity, hand-crafted,
trivial, chance), whether the method has ``replicated`` seeds (its rows carry ``seed`` 0..n-1 and the
leaderboard averages over them and reports their spread), and whether it must ``leave_out_mechanism``
(a method made of atlas scores would otherwise find a head type by reading its own score: it drops
the columns of the queried type's mechanism group, ``leaderboard.mechanisms``).

A method with a ``build`` function is computed by the ``baselines`` stage from the shared
:class:`MethodInputs` and written to ``data/embeddings/<name>.parquet`` (tidy: ``model, layer, head,
seed, e_*``); one without (``universal``) is written by its own stage. To add a method: write one
function ``MethodInputs -> table`` here, decorated with :func:`register_method`, and add its two
paths to ``dvc.yaml`` (``data/embeddings/<name>.parquet`` under ``baselines`` and
``metrics/leaderboard/<name>.json`` under ``leaderboard``); ``tests/unit/test_methods.py`` checks the
wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd

from attendome.core.io import load_tensors, read_parquet, write_parquet
from attendome.core.params import Params
from attendome.prep.store import load_attention, load_attention_info
from attendome.space.baselines import (attention_stats, cloner_embeddings, depth_embeddings, depth_stats_embeddings,
                                       gram_pca, random_embeddings, rsa_gram, score_embeddings, table)

__all__ = ["EmbeddingMethod", "MethodInputs", "METHODS", "register_method", "get_method", "run_baselines"]


@dataclass(frozen=True)
class EmbeddingMethod:
    """One entry of the method registry (see module docstring)."""

    name: str
    build: Callable[["MethodInputs"], pd.DataFrame] | None
    kind: str
    replicated: bool = False
    leave_out_mechanism: bool = False
    description: str = ""


METHODS: dict[str, EmbeddingMethod] = {}


def register_method(name: str, *, kind: str, replicated: bool = False, leave_out_mechanism: bool = False,
                    description: str = ""):
    """Decorator registering ``build`` as method ``name`` (``build=None``: written by another stage)."""
    def deco(fn):
        if name in METHODS:
            raise ValueError(f"embedding method {name!r} is registered twice")
        METHODS[name] = EmbeddingMethod(name, fn, kind, replicated, leave_out_mechanism, description)
        return fn
    return deco


def get_method(name: str) -> EmbeddingMethod:
    """The registered method ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown embedding method {name!r}; registered: {list(METHODS)}") from None


class MethodInputs:
    """What the methods build from, each read once when first asked for (training prompts only)."""

    def __init__(self, params: Params, root: str = "."):
        self.params, self.root = params, root
        index = read_parquet(f"{root}/data/embeddings/universal.parquet").query("seed == 0")
        self.index: pd.DataFrame = index[["model", "layer", "head"]].reset_index(drop=True)
        self.models: list[str] = list(self.index["model"].drop_duplicates())

    @cached_property
    def atlas(self) -> pd.DataFrame:
        return read_parquet(f"{self.root}/data/atlas.parquet")

    @cached_property
    def train_prompts(self) -> list[str]:
        prompts = read_parquet(f"{self.root}/data/corpus/prompts.parquet")
        return prompts[prompts.split == "train"].prompt_id.tolist()

    @cached_property
    def attention(self) -> list[dict]:
        """Per model ``{prompt_id: (H, S, S + 1)}``, in :attr:`models` order."""
        return [load_attention(f"{self.root}/data/attention/{k}.safetensors")[0] for k in self.models]

    @cached_property
    def n_layers(self) -> dict[str, int]:
        return {k: load_attention_info(f"{self.root}/data/attention/{k}.safetensors")["n_layers"]
                for k in self.models}


# ---- the methods, in the leaderboard's order

register_method("universal", kind="learned", replicated=True,
                description="Phase 2: each head's embedding in the universal encoder (stage embed)")(None)


@register_method("cloner", kind="learned", replicated=True,
                 description="Phase 1: each head's cloner, its basis-free invariants standardised and PCA-projected")
def _cloner(inp: MethodInputs) -> pd.DataFrame:
    from attendome.clone.model import BilinearCloner

    per_seed: dict[int, dict[str, np.ndarray]] = {}
    for k in inp.models:
        w, _ = load_tensors(f"{inp.root}/models/cloners/{k}.safetensors")
        for name in sorted({n.split(".")[0] for n in w if n.startswith("s") and "." in n}):
            H, d_in, rank = w[f"{name}.Q"].shape
            c = BilinearCloner(H, d_in, rank, 0, (w[f"{name}.rel"].shape[1] - 1) // 2,
                               prev_keys=w[f"{name}.K"].shape[1] == 2 * d_in, match_terms=f"{name}.match_w" in w)
            c.load_state_dict({p: w[f"{name}.{p}"] for p in c.state_dict()})
            per_seed.setdefault(int(name[1:]), {})[k] = c.invariants().detach().numpy()
    return pd.concat([cloner_embeddings(per_seed[r], inp.index, inp.params.embed.dim, r) for r in sorted(per_seed)],
                     ignore_index=True)


@register_method("rsa", kind="similarity",
                 description="representational similarity analysis of the heads' attention on the training prompts")
def _rsa(inp: MethodInputs) -> pd.DataFrame:
    return table(inp.index, gram_pca(rsa_gram(inp.attention, inp.train_prompts), inp.params.embed.dim), 0)


@register_method("scores", kind="hand-crafted", leave_out_mechanism=True,
                 description="the atlas scores, z-scored (the queried type's mechanism group left out)")
def _scores(inp: MethodInputs) -> pd.DataFrame:
    return score_embeddings(inp.atlas, inp.index)


@register_method("depth", kind="trivial", description="relative depth layer / (n_layers - 1) alone")
def _depth(inp: MethodInputs) -> pd.DataFrame:
    return depth_embeddings(inp.index, inp.n_layers)


@register_method("depth_stats", kind="trivial",
                 description="relative depth + sink mass, previous-segment mass and entropy of the training attention")
def _depth_stats(inp: MethodInputs) -> pd.DataFrame:
    return depth_stats_embeddings(inp.index, inp.n_layers, attention_stats(inp.attention, inp.train_prompts))


@register_method("random", kind="chance", replicated=True, description="i.i.d. standard normal vectors")
def _random(inp: MethodInputs) -> pd.DataFrame:
    return random_embeddings(inp.index, inp.params.embed.dim, inp.params.leaderboard.seed, inp.params.embed.n_seeds)


def run_baselines(params: Params, root: str = ".") -> dict:
    """The ``baselines`` stage: every registered method with a ``build``, on the fixed thread count
    ``embed.threads`` (bit-identical on every machine), written to ``data/embeddings/<name>.parquet``.

    Returns:
        ``{method: (rows, dims)}`` for the log line.
    """
    from attendome.clone.training import torch_threads

    inp = MethodInputs(params, root)
    sizes = {}
    with torch_threads(params.embed.threads):
        for name, m in METHODS.items():
            if m.build is None:
                continue
            t = m.build(inp)
            write_parquet(t, f"{root}/data/embeddings/{name}.parquet")
            sizes[name] = (len(t), sum(c.startswith("e_") for c in t.columns))
    return sizes
