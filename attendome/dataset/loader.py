"""``ModelLoader``: load several models one after another, by params key or Hugging Face id."""

from __future__ import annotations

from pathlib import Path

from attendome.models import LoadedModel, load_model
from attendome.params import ModelSpec, Params, load_params, parse_params

__all__ = ["ModelLoader", "spec_key"]


def spec_key(name: str) -> str:
    """A params-safe key for a model name (``org/model`` -> ``org--model``)."""
    return name.replace("/", "--").replace(".", "_")


class ModelLoader:
    """Loads models with eager attention, one at a time, and releases them.

    Args:
        device: torch device for models not placed by ``device_map``.
        params_path: ``params.yaml`` whose ``models`` keys may be used as names.
        dtype: dtype for Hugging Face ids (``float32``, ``bfloat16``, ``float16``, ``auto``).
        device_map: e.g. ``"auto"`` for large Hugging Face models on several devices.
    """

    def __init__(self, device: str = "cpu", params_path: str | Path = "params.yaml",
                 dtype: str = "float32", device_map: str | None = None):
        self.device = device
        self.dtype = dtype
        self.device_map = device_map
        path = Path(params_path)
        self._params = load_params(path) if path.exists() else parse_params({"models": {}})
        self.loaded: dict[str, LoadedModel] = {}

    def _params_for(self, name: str) -> tuple[str, Params]:
        models = dict(self._params.models)
        if name in models:
            key = name
            models[key] = models[key].model_copy(update={"device": self.device})
        else:
            key = spec_key(name)
            local = Path(name).expanduser()
            src = dict(source="local", path=str(local)) if local.exists() else dict(source="hf", hf_id=name)
            models[key] = ModelSpec(**src, name=name, dtype=self.dtype, device=self.device,
                                    device_map=self.device_map)
        return key, self._params.model_copy(update={"models": models})

    def load(self, name: str) -> LoadedModel:
        """Load ``name`` (a params key, a local path or a Hugging Face id) as a :class:`LoadedModel`."""
        key, params = self._params_for(name)
        lm = load_model(key, params)
        lm.name = name
        self.loaded[name] = lm
        return lm

    def load_model(self, name: str):
        """Seed API: load ``name`` and return ``(model, tokenizer)``."""
        lm = self.load(name)
        return lm.model, lm.tokenizer

    def unload_model(self, name: str) -> None:
        """Release one model's memory."""
        lm = self.loaded.pop(name, None)
        if lm is not None:
            lm.release()

    def clear_cache(self) -> None:
        """Release every loaded model."""
        for name in list(self.loaded):
            self.unload_model(name)
