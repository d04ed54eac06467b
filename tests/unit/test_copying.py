"""Unit tier: copying scores on hand-set and tiny random weights, checked against brute force."""

import numpy as np
import pytest
import torch

from attendome.atlas.circuits import ov_weights
from attendome.atlas.copying import ov_eigen_scores
from attendome.atlas.score import score_model
from attendome.core.params import HeadsParams
from tests.tiny_models import build_tiny_induction_gpt2, build_tiny_llama, tiny_loaded

PROBE = {"num_samples": 16, "seq_len": 8, "batch_size": 8, "seed": 0}


def _scores(model, tok, names):
    lm = tiny_loaded(model, tok)
    df = score_model(lm, HeadsParams.model_validate({"scorers": names, "probe": PROBE}), progress=False)
    return df.set_index(["score_name", "layer", "head"])["value"]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_hand_set_copying_head_scores_plus_or_minus_one(sign):
    model, tok = build_tiny_induction_gpt2(copy_sign=sign)
    s = _scores(model, tok, ["copying_ov", "copying"])
    assert s[("copying_ov", 1, 0)] == pytest.approx(sign, abs=1e-4)
    # behavioural: the head attends to the next token of the earlier copy and writes it
    assert sign * s[("copying", 1, 0)] > 3.0
    # the previous-token head writes into a subspace the unembedding does not read
    assert abs(s[("copying", 0, 0)]) < 0.5


def _gain(norm, arch):
    w = norm.weight.detach().double()
    return 1.0 + w if arch == "gemma3" else w


@torch.no_grad()
def brute_force_ov_scores(model, arch):
    """Full vocab x vocab OV matrix from module calls (not weight slicing), then its eigenvalues."""
    body = model.model
    V = model.config.vocab_size
    H, dh = model.config.num_attention_heads, model.config.head_dim
    emb = body.embed_tokens(torch.arange(V)).double()  # (V, d), Gemma's scale included by the module
    g_f = _gain(body.norm, arch)
    out = np.zeros((len(body.layers), H))
    for li, layer in enumerate(body.layers):
        attn = layer.self_attn
        x = (emb * _gain(layer.input_layernorm, arch)).float()
        v = attn.v_proj(x).double()  # (V, n_kv * dh)
        n_kv = v.shape[1] // dh
        for h in range(H):
            g = h // (H // n_kv)
            z = torch.zeros(V, H * dh, dtype=torch.float32)
            z[:, h * dh:(h + 1) * dh] = v[:, g * dh:(g + 1) * dh].float()
            o = attn.o_proj(z).double()  # (V, d)
            if arch == "gemma3":
                o = o * _gain(layer.post_attention_layernorm, arch)
            M = model.lm_head((o * g_f).float()).double()  # (V, V)
            lam = torch.linalg.eigvals(M)
            out[li, h] = float(lam.sum().real / lam.abs().sum())
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_copying_ov_matches_brute_force_eigendecomposition(arch):
    model = build_tiny_llama(arch)
    lm = tiny_loaded(model)
    fast = ov_eigen_scores(ov_weights(lm))
    slow = brute_force_ov_scores(model, arch)
    np.testing.assert_allclose(fast, slow, atol=1e-6)
    assert np.abs(fast).max() <= 1.0 + 1e-9
