"""Unit tier: the architecture matrix (issue 17). Tiny random-weight models built from each
family's ``transformers`` config (the real module layout, shrunk sizes, no weight files, the offline
word-level tokenizer of :mod:`tests.tiny_models`) go through every atlas scorer and through the
segment-attention capture of Phase 1. Every score is either defined or NaN with a ``reason``; never a
crash, never a silent zero. The fused query/key/value layouts (GPT-NeoX, Phi-3) are checked against the
value states the model's own forward splits out."""

import re

import pandas as pd
import pytest
import torch
import yaml

from attendome.atlas.circuits import ov_weights
from attendome.atlas.copying import ov_eigen_scores
from attendome.atlas.score import score_model
from attendome.core.params import parse_params
from attendome.prep.segattn import segment_attention
from tests.conftest import ROOT
from tests.tiny_models import _tokenizer, tiny_loaded

V = 64
SMALL = dict(vocab_size=V, num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=48)
KV = dict(SMALL, num_key_value_heads=2)


def _config(name: str):
    import transformers as T

    builders = {
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_layer=2, n_head=4, n_embd=32, n_positions=256)),
        "gpt_neo": lambda: T.GPTNeoForCausalLM(T.GPTNeoConfig(
            vocab_size=V, num_layers=2, num_heads=4, hidden_size=32, attention_types=[[["global", "local"], 1]],
            max_position_embeddings=256, window_size=16)),
        "gpt_neox (Pythia)": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**SMALL, max_position_embeddings=256)),
        "opt": lambda: T.OPTForCausalLM(T.OPTConfig(
            vocab_size=V, num_hidden_layers=2, num_attention_heads=4, hidden_size=32, ffn_dim=48,
            word_embed_proj_dim=32, max_position_embeddings=256)),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**KV)),
        "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**KV)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**KV)),
        "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**KV, head_dim=8)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**KV, head_dim=8, attn_implementation="eager")),
        "gemma3": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(**KV, head_dim=8, sliding_window=16)),
        # EmbeddingGemma's layout: a Gemma 3 text model switched to bidirectional attention (an encoder).
        # Its sliding layers see |i - j| <= window / 2 (transformers 5.25: +-8 at window 16, so the
        # probe's copies 13 apart would get a true zero); EmbeddingGemma's window is 512
        "gemma3 (bidirectional)": lambda: T.Gemma3TextModel(T.Gemma3TextConfig(
            **KV, head_dim=8, sliding_window=64, use_bidirectional_attention=True)),
        "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(**KV, pad_token_id=0)),
        "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**KV, pad_token_id=0)),
        "bert": lambda: T.BertForMaskedLM(T.BertConfig(**SMALL, max_position_embeddings=256)),
        "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**SMALL, max_position_embeddings=258, pad_token_id=1)),
        "mpnet": lambda: T.MPNetForMaskedLM(T.MPNetConfig(**SMALL, max_position_embeddings=258, pad_token_id=1)),
        # an encoder-decoder's decoder: Whisper's, conditioned on the encoder output of silence
        "whisper (decoder)": lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
            vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=8,
            max_target_positions=128, decoder_start_token_id=1, pad_token_id=0, bos_token_id=0, eos_token_id=0)),
    }
    torch.manual_seed(0)
    return builders[name]().eval()


ENCODERS = {"bert", "roberta", "mpnet", "gemma3 (bidirectional)"}
# fused q/k/v projections that copying_ov splits itself (checked against the model's own split below)
FUSED = {"gpt_neox (Pythia)": "query_key_value", "phi3": "qkv_proj"}
# the retrieval probe's prefill asks for SDPA, which transformers refuses for Gemma 2: it stays eager
NO_SDPA = {"gemma2"}
FAMILIES = ["gpt2", "gpt_neo", "gpt_neox (Pythia)", "opt", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3",
            "phi3", "olmo2", "bert", "roberta", "mpnet", "gemma3 (bidirectional)", "whisper (decoder)"]


@pytest.fixture(scope="module")
def heads_params():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["heads"]["probe"].update(num_samples=2, seq_len=12, batch_size=2)
    raw["heads"]["retrieval"].update(context_lengths=[64], depths=[0.5], needles_per_cell=1, max_new_tokens=4)
    return parse_params(raw).heads


@pytest.mark.parametrize("family", FAMILIES)
def test_every_scorer_is_defined_or_says_why_not(family, heads_params):
    lm = tiny_loaded(_config(family), _tokenizer(), family.split()[0])
    if family in NO_SDPA:  # the prefill stays eager, and says so
        with pytest.warns(UserWarning, match="prefill stays on 'eager'"):
            df = score_model(lm, heads_params, progress=False)
    else:
        df = score_model(lm, heads_params, progress=False)
    assert set(df.score_name) == set(heads_params.scorers)
    assert len(df) == len(heads_params.scorers) * lm.n_layers * lm.n_heads
    for name, g in df.groupby("score_name"):
        if g.value.isna().any():
            assert g.value.isna().all() and (g.reason != "").all(), f"{family} {name}: NaN without a reason"
        else:
            assert (g.reason == "").all() and g.value.map(float).notna().all(), f"{family} {name}"
    for name in ("previous_token", "duplicate_token", "induction"):  # attention means: never exactly 0
        g = df[(df.score_name == name) & df.value.notna()]
        assert g.empty or (g.value > 0).all(), f"{family} {name}: a silent zero"
    undefined = set(df[df.value.isna()].score_name)
    if family in ENCODERS:  # no causal mask, no LM head: only the pattern scores that need neither
        assert undefined == set(heads_params.scorers) - {"previous_token", "duplicate_token"}
    elif family.startswith("whisper"):  # 448 text positions hold no haystack: both retrieval probes n/a
        assert undefined == {"retrieval", "retrieval_tf"}
        assert df[df.score_name == "retrieval"].reason.str.contains("Whisper").all()
    else:  # a random tiny decoder retrieves no needle; every other score is defined
        assert undefined <= {"retrieval"}


@pytest.mark.parametrize("family", FAMILIES)
def test_segment_attention_is_captured(family):
    texts = ["w1 w2 w3 w4 w5 w1 w2 w3", "w9 w8 w7 w6 w5 w4"]
    prompts = pd.DataFrame({"prompt_id": ["a", "b"], "text": texts})
    segs = pd.DataFrame([{"prompt_id": pid, "seg": j, "char_start": m.start(), "char_end": m.end(), "text": m.group()}
                         for pid, t in zip(["a", "b"], texts) for j, m in enumerate(re.finditer(r"\S+", t))])
    lm = tiny_loaded(_config(family), _tokenizer(), family.split()[0])
    out = segment_attention(lm, prompts, segs, progress=False, batch=2)
    for pid, n in (("a", 8), ("b", 6)):
        A = out[pid].float()  # (L * H, S, S + 1), column 0 the sink
        assert A.shape == (lm.n_layers * lm.n_heads, n, n + 1)
        assert torch.allclose(A.sum(-1), torch.ones(A.shape[:2]), atol=1e-2)
        later = torch.triu_indices(n, n + 1, offset=2)  # column 1 + J for keys J > I
        if lm.is_causal:  # no mass on later segments
            assert A[:, later[0], later[1]].abs().max() < 1e-3
        else:  # an encoder (and a decoder switched to bidirectional attention) sees them
            assert A[:, later[0], later[1]].sum(-1).min() > 0.05


@torch.no_grad()
def _values_by_the_model(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Per layer ``(n_kv, V, dh)``: the value states the model's own attention code splits out of its
    (fused) projection for inputs ``x (V, d)``, captured by a registered attention function."""
    from transformers import AttentionInterface

    captured = []

    def capture(module, query, key, value, attention_mask, **kw):
        captured.append(value[0].float())  # (n_kv, V, dh)
        return torch.zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3]), None

    AttentionInterface.register("attendome_capture", capture)
    old = model.config._attn_implementation
    model.set_attn_implementation("attendome_capture")
    attns = [m for m in model.modules() if m.__class__.__name__.endswith("Attention")]
    hooks = [a.register_forward_pre_hook(lambda mod, args, kw: (args, {**kw, "hidden_states": x[None]})
                                         if "hidden_states" in kw else ((x[None],) + args[1:], kw), with_kwargs=True)
             for a in attns]
    try:
        model(input_ids=torch.arange(x.shape[0])[None])
    finally:
        for h in hooks:
            h.remove()
        model.set_attn_implementation(old)
    return captured


def _norm(mod, *names):
    return next(getattr(mod, n) for n in names if getattr(mod, n, None) is not None)


@pytest.mark.parametrize("family", sorted(FUSED) + ["opt"])
def test_copying_ov_matches_the_models_own_value_split(family):
    """The fused layouts (and OPT's norm names) against value states split by the model's own code."""
    model = _config(family)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # norm gains away from 1, so that a gain read from the wrong module shows
        for mod in model.modules():
            if "norm" in type(mod).__name__.lower() and getattr(mod, "weight", None) is not None:
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
    lm = tiny_loaded(model, _tokenizer(), family.split()[0])
    fast = ov_eigen_scores(ov_weights(lm))
    body = model.base_model
    emb = body.get_input_embeddings().weight.detach().float()  # (V, d)
    inner = getattr(body, "decoder", body)  # OPT
    g_f = _norm(inner, "norm", "final_layer_norm").weight.detach().float()
    slow = []
    for li, layer in enumerate(inner.layers):
        g_in = _norm(layer, "input_layernorm", "self_attn_layer_norm").weight.detach().float()
        x = emb * g_in  # (V, d): input gain folded, no normalising division (the definition)
        vals = _values_by_the_model(model, x)[li]  # (n_kv, V, dh)
        H, dh = lm.n_heads, lm.d_head
        attn = _norm(layer, "self_attn", "attention")
        w_o = _norm(attn, "o_proj", "out_proj", "dense").weight.detach().float()  # (d, H * dh)
        row = []
        for h in range(H):
            z = torch.zeros(x.shape[0], H * dh)
            z[:, h * dh:(h + 1) * dh] = vals[h // (H // vals.shape[0])]
            o = z @ w_o.T  # (V, d): the head's write, no bias
            M = ((o * g_f) @ model.get_output_embeddings().weight.detach().float().T).double()  # (V, V)
            lam = torch.linalg.eigvals(M)
            row.append(float(lam.sum().real / lam.abs().sum()))
        slow.append(row)
    assert fast.shape == (lm.n_layers, lm.n_heads)
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(slow, dtype=torch.float64), atol=1e-5, rtol=0)


HALF_TOL = {"induction": 0.01, "previous_token": 0.01, "duplicate_token": 0.01, "copying_ov": 0.01, "copying": 0.25}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3", "gpt_neox (Pythia)"])
def test_half_precision_scores_agree_with_float32(family, dtype, heads_params):
    """The atlas in bfloat16 / float16 (how big models are loaded: catalog ``dtype``) against float32,
    same weights: attention-pattern and OV scores within 0.01, the copying z-score within 0.25."""
    hp = heads_params.model_copy(update={"scorers": tuple(HALF_TOL)})
    scores = {}
    for dt in (torch.float32, dtype):
        lm = tiny_loaded(_config(family).to(dt), _tokenizer(), family.split()[0])
        df = score_model(lm, hp, progress=False)
        scores[dt] = df.set_index(["score_name", "layer", "head"]).value.astype(float)
    diff = (scores[dtype] - scores[torch.float32]).abs().groupby(level=0).max()
    assert diff.notna().all(), diff
    for name, tol in HALF_TOL.items():
        assert diff[name] <= tol, (name, diff[name])


def test_device_map_auto_places_the_model_through_accelerate(tmp_path, heads_params):
    """``device_map: auto`` (how big models are spread over devices; accelerate places the weights) on a
    local folder loads and scores like a plain load. On a CPU-only machine everything lands on the CPU
    (transformers then records no ``hf_device_map``); spreading over several devices is not checked here."""
    import numpy as np

    from attendome.core.models import load_model, params_for_name
    from attendome.core.params import load_params

    folder = tmp_path / "tiny-llama"
    _config("llama").save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    params = load_params("params.yaml")
    hp = heads_params.model_copy(update={"scorers": ("induction", "previous_token", "copying_ov")})
    scores = {}
    for device_map in (None, "auto"):
        key, p = params_for_name(params, str(folder), device_map=device_map)
        assert p.model(key).device_map == device_map
        lm = load_model(key, p)
        assert {q.device.type for q in lm.model.parameters()} == {"cpu"}
        scores[device_map] = score_model(lm, hp, progress=False).value.to_numpy()
    np.testing.assert_array_equal(scores[None], scores["auto"])
