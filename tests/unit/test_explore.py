"""Unit tier: the explorer's pieces on hand-built inputs (the site itself is driven in a browser in
tests/e2e/test_e2e_dvc.py)."""

import re
from types import SimpleNamespace

import pytest
import yaml

from attendome.core.params import ParamsError, parse_params
from attendome.explore.site import SITE_FILES, _pick_prompts, check_params, dvc_plots_template, leaderboard_tables
from tests.e2e.browser import CHROMIUM_ARGS
from tests.conftest import ROOT


def _params(**explore):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["explore"].update(explore)
    return parse_params(raw)


def test_the_dvc_template_inlines_vega_and_loads_nothing():
    html = dvc_plots_template()
    assert "{plot_divs}" in html  # DVC's placeholder
    assert "{scripts}" not in html  # DVC's CDN tags are left out on purpose
    assert not re.search(r"<script[^>]+src=", html)
    assert "sourceMappingURL" not in html
    for version in ('"5.20.2"', "5.2.0", "6.18.2"):  # the versions DVC's own page loads from its CDN
        assert version in html


def test_the_page_files_exist_and_reference_only_local_files():
    from importlib import resources

    for name in SITE_FILES:
        text = resources.files("attendome.explore").joinpath("assets", name).read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name
        assert "fetch(" not in text and "XMLHttpRequest" not in text, name  # file:// refuses both
    assert "--disable-background-networking" in CHROMIUM_ARGS


def test_params_checks_refuse_unknown_methods_and_pairs():
    check_params(_params())
    with pytest.raises(ParamsError, match="unknown embedding method"):
        check_params(_params(methods=["universal", "umap"]))
    with pytest.raises(ParamsError, match="explore.pair"):
        check_params(_params(pair=["smollm2-135m", "not-in-run"]))
    with pytest.raises(ParamsError, match="explore.pair"):
        check_params(_params(pair=["smollm2-135m", "smollm2-135m"]))
    with pytest.raises(ParamsError, match="explore"):
        _params(max_segmets=3)  # a typo is an unknown key
    with pytest.raises(ParamsError):
        _params(methods=[])


def test_prompts_shown_are_the_shortest_of_each_kind_alternating():
    data = SimpleNamespace(prompt_ids=["a", "b", "c", "d", "e"], kinds=["prose", "repeat", "prose", "repeat", "prose"])
    sizes = {"a": 30, "b": 12, "c": 20, "d": 8, "e": 20}
    assert _pick_prompts(data, 2, sizes) == [2, 3]  # c (20 < 30; ties by id) then d (8)
    assert _pick_prompts(data, 4, sizes) == [2, 3, 4, 1]
    assert _pick_prompts(data, 9, sizes) == [2, 3, 4, 1, 0]
    only = SimpleNamespace(prompt_ids=["x", "y"], kinds=["prose", "prose"])
    assert _pick_prompts(only, 2, {"x": 5, "y": 3}) == [1, 0]


def test_leaderboard_tables_carry_the_cis_and_sort_values():
    board = {
        "types": ["induction"],
        "pools": {"induction": {"n_positive": 4, "n_pool": 40}},
        "methods": {
            "universal": {"induction": {"all": {"map": {"mean": 0.5, "chance": 0.1, "ci95_by_model": [0.4, 0.6],
                                                         "kv_collapsed": {"mean": 0.45}, "null": {"p95": 0.2}},
                                                 "precision@5": {"mean": 0.3}, "hit@10": {"mean": 0.9}},
                                         "classification": {"f1": 0.7}}},
            "rsa": {"induction": {}},
        },
        "differences": {"induction": {"universal-rsa": {"mean": 0.1, "ci95_by_model": [0.02, 0.2]},
                                      "universal-depth": {"mean": -0.1, "ci95_by_model": [-0.2, -0.01]}}},
        "reconstruction": {"m": {"universal_over_positional": 0.8, "cloner_over_positional": 0.85,
                                 "universal_over_cloner": 0.94, "control": False}},
    }
    tables = leaderboard_tables(board)
    assert [t["title"].split(":")[0] for t in tables][0] == "induction"
    uni, rsa = tables[0]["rows"]
    assert uni[1] == {"v": 0.5, "t": "0.500 [0.40, 0.60]"} and uni[2]["v"] == 0.1 and uni[-1]["v"] == 0.7
    assert rsa[1] == {"v": None, "t": "-"}  # a method without the type: empty, sorts last
    diffs = {r[1]["t"]: r[-1]["t"] for r in tables[1]["rows"]}
    assert diffs == {"universal - rsa": "yes", "universal - depth": "behind"}
    assert tables[2]["rows"][0][1]["v"] == 0.8
    assert all(len(r) == len(t["columns"]) for t in tables for r in t["rows"])
