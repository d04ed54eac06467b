"""``ModelLoader``: load several models one after another, by params key or Hugging Face id."""

from __future__ import annotations

from pathlib import Path

from attendome.core.models import load_model, LoadedModel, params_for_name, spec_key
from attendome.core.params import Params, find_params, load_params

__all__ = ["ModelLoader", "spec_key"]


class ModelLoader:
    """Loads models with eager attention, one at a time, and releases them.

    Args:
        device: torch device for models not placed by ``device_map``.
        params_path: the ``params.yaml`` whose catalogue keys may be used as names; by default
            ``./params.yaml`` when present, else the defaults shipped with the package (so the API
            works from any directory). Which file is used is printed once.
        dtype: dtype for Hugging Face ids (``float32``, ``bfloat16``, ``float16``, ``auto``).
        device_map: e.g. ``"auto"`` for large Hugging Face models on several devices.
    """

    def __init__(self, device: str = "cpu", params_path: str | Path | None = None,
                 dtype: str = "float32", device_map: str | None = None, verbose: bool = True):
        import sys

        self.device = device
        self.dtype = dtype
        self.device_map = device_map
        path, how = find_params(params_path)
        self._params = load_params(path)
        self.params_path = path
        if verbose:
            print(f"attendome: model catalogue from {path} ({how})", file=sys.stderr)
        self.loaded: dict[str, LoadedModel] = {}

    def _params_for(self, name: str) -> tuple[str, Params]:
        return params_for_name(self._params, name, device=self.device, dtype=self.dtype,
                               device_map=self.device_map)

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
