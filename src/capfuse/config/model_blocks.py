"""The model configs' blocks (heads, fusion, auxiliary losses, the training loop, fine
tuning) and the two model kinds as frozen dataclasses: each field's type says what it accepts,
its default is the one default (``capfuse.config.schema`` says more). The encoder blocks live in
``capfuse.config.encoder_blocks``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Lt, MinLen
from pydantic import AfterValidator, BeforeValidator, Strict

from capfuse.config.encoder_blocks import (  # noqa: F401 (re-exported: the encoders are model blocks)
    IMAGE_BACKENDS,
    IMAGE_MODEL_KEYS,
    POOLINGS,
    PRECISIONS,
    TEXT_WEIGHTS,
    CaptionEncoderSettings,
    ImageEncoderSettings,
    ImageEncoderSpec,
    TextEncoderSpec,
)
from capfuse.config.pipeline_blocks import PseudoSettings, Seed, block
from capfuse.config.types import (
    BadValue,
    Bool,
    Count,
    CountOrOff,
    Device,
    Dropout,
    Name,
    NonNegative,
    Positive,
    Probability,
    Says,
    Share,
)
from capfuse.config.values import exact

HEAD_OWN_KEYS = ("kind", "hidden", "dropout")


def _head_mapping(value):
    """A head as configured (``{kind, hidden, dropout, <the head's parameters>}``) as its fields."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        own = {k: v for k, v in value.items() if k in HEAD_OWN_KEYS}
        return {**own, "options": {k: v for k, v in value.items() if k not in HEAD_OWN_KEYS}}
    return value


@dataclass(frozen=True)
class HeadSettings:
    """``image_head:`` / ``caption_head:``: a branch head chosen by ``kind`` (capfuse.nn.heads).

    ``hidden`` and ``dropout`` default here (every head takes them); any other parameter of the
    chosen head (``attn``: ``queries``, ``heads``) is in ``options`` and defaults in the head itself.
    """

    kind: Name = "mlp"
    hidden: Count = 256
    dropout: Dropout = 0.3
    options: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        heads = self.options.get("heads")  # an attention head's: they split ``hidden`` evenly
        if isinstance(heads, int) and not isinstance(heads, bool) and heads > 0 and self.hidden % heads:
            raise BadValue("heads", heads, f"must divide hidden ({self.hidden})")

    def kwargs(self) -> dict:
        return {"hidden": self.hidden, "dropout": self.dropout, **self.options}

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> HeadSettings:
        return exact(cls, _head_mapping(cfg))


# A head field of a net: the configured mapping is split into the head's own fields and options.
Head = Annotated[HeadSettings, BeforeValidator(_head_mapping)]


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
MIXES = ("none", "mixup", "cutmix")


@dataclass(frozen=True)
class TrainSettings:
    """``train:``, the ``net`` loop's knobs (the loop itself: capfuse.models.net)."""

    epochs: Count = 30  # an upper bound; early stopping on the inner split ends sooner
    # If set, the schedule spans at most this many optimiser steps: epochs = min(epochs,
    # ceil(max_steps / steps per epoch)). A fold of many rows then runs fewer, longer epochs,
    # and a small one keeps its early-stopped span (capfuse.models.loop). 0: off.
    max_steps: CountOrOff = 0
    batch_size: Count = 128
    lr: Positive = 2e-3
    # At 2x, 4x ... this many training rows in a fold the batch doubles (up to max_batch_size)
    # and lr grows by the square root of the batch's growth: 24,000 rows train at 512, the demo's
    # 1,600 at 128 (capfuse.models.settings.for_rows). 0 turns it off.
    batch_grow_rows: CountOrOff = 4000
    max_batch_size: Count = 512
    weight_decay: NonNegative = 0.05
    warmup_epochs: NonNegative = 1.0
    min_lr_ratio: Probability = 0.02  # cosine floor, as a fraction of lr
    patience: CountOrOff = 4  # epochs without a better stopping-set score before stopping
    # How the stopping point is chosen without the held-out fold (capfuse.models.net says more):
    # inner is the cheapest rule that keeps the fold blind; refit costs twice the time for no
    # better score on the demo (the early_stop ablation).
    early_stop: Literal[EARLY_STOP] = "inner"
    # share of the fold's training rows that only judge epochs: some rows to judge by, and most to train on
    inner_frac: Annotated[float, Strict(), Gt(0), Lt(0.5)] = 0.15
    stop_metric: Literal["f1", "loss"] = (
        "f1"  # what the stopping rows judge by: mean F1 (the target), or loss (smoother)
    )
    grad_clip: NonNegative = 1.0  # the gradient's largest norm (0: no clipping)
    # An exponential moving average of the weights, its half-life in epochs (the decay per
    # optimiser step follows from the steps an epoch takes, so the horizon means the same at 2,000
    # rows and at 30,000). The stopping rows judge the average and the fold keeps it: the usual
    # way to smooth the last epochs' noise out of a small fold's weights. 0: off.
    ema_halflife: NonNegative = 0.0
    accumulate: Count = 1  # gradient accumulation steps (finetune mode, large effective batches)
    flip_p: Probability = 0.5  # chance a training sample uses its flipped view
    # Augmentation of the cached map a trained top stage reads (capfuse.models.augment; off by
    # default, docs/shift.md): the chance a training sample's map is cropped, and the smallest
    # crop's side as a share of the map's (it is resized back).
    crop_p: Probability = 0.0
    crop_scale: Share = 0.6  # on Lite0's 7 x 7 map: windows of 4 to 7 cells a side
    # Mixing of training samples with a partner from the batch: mixup (every input and the
    # targets, class by class) or cutmix (a box of the partner's cached map; the caption's
    # vectors and the targets mix by the box's share). none: off.
    mix: Literal[MIXES] = "none"
    mix_p: Probability = 0.5  # chance a sample is mixed: half the batch still trains on itself
    mix_alpha: Positive = 0.4  # Beta(alpha, alpha) of the share kept: small alphas keep most samples near themselves
    # MixStyle (Zhou et al., ICLR 2021) on a trained top stage's cached map: each map's channel
    # means and spreads mixed with a batch partner's by a share drawn from Beta(alpha, alpha);
    # content and targets stay the sample's. The chance a batch is mixed; 0: off.
    style_p: Probability = 0.0
    style_alpha: Positive = 0.1
    tta: Bool = True  # average original and flipped views for OOF and test logits
    eval_batch_size: Count = 256
    # The loss, ``{name: <loss>, <its parameters>}``; by default BCE with log-inverse-frequency
    # class weights, so that rare classes are not drowned by the frequent ones.
    loss: Mapping = field(default_factory=lambda: {"name": "weighted_bce"}, metadata={"check": "loss"})
    # After training, fit a scale and a shift of the logits (Platt scaling, two numbers for all
    # classes) on the inner stopping rows, which are training rows: a loss that is not a log-loss
    # (asl, tempered_bce) leaves probabilities the log-loss weighted blend misreads, so such a
    # model is put on the same scale as the others before the second level sees it.
    calibrate: Bool = False

    def __post_init__(self) -> None:
        if self.calibrate and self.early_stop != "inner":
            raise BadValue(
                "calibrate",
                True,
                f"needs early_stop: inner (it fits on the inner stopping rows, which early_stop: "
                f"{self.early_stop} trains on)",
            )

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> TrainSettings:
        return exact(cls, cfg, prefix=("train",))

    @property
    def loss_settings(self) -> LossSettings:
        return LossSettings.from_config(self.loss)


def _heads_divide(d_model: int, heads: int) -> None:
    """Multi-head attention splits ``d_model`` evenly among the heads."""
    if d_model % heads:
        raise BadValue("heads", heads, f"must divide d_model ({d_model})")


@dataclass(frozen=True)
class LabelQuerySettings:
    """``fusion.label_query:`` (label-query pooling: a learned query per class reads the image and
    caption tokens): ``true``, ``false`` or a mapping of these."""

    enabled: Bool = True
    caption_tokens: Bool = False  # the queries read the caption tokens as well as the image tokens
    d_model: Count = 128
    heads: Count = 4
    dropout: Dropout = 0.1
    # Read the cross-attention's projected tokens instead of projecting again (most of a CPU step)
    share_projection: Bool = True
    temperature: Positive = 0.1  # MuMIC's tempered sigmoid: a cosine of 1 is a logit of 10
    learn_temperature: Bool = True

    def __post_init__(self) -> None:
        _heads_divide(self.d_model, self.heads)


def _label_query_in(value):
    """``true`` is the defaults; ``false`` and null are off."""
    if value is True:
        return {}
    return None if value is False else value


def _label_query_out(value: LabelQuerySettings | None) -> LabelQuerySettings | None:
    return value if value is not None and value.enabled else None  # enabled: false is off too


@dataclass(frozen=True)
class FusionSettings:
    """``fusion:``: logit fusion (the branches' logits weighed by learned weights), cross-attention
    between image and caption tokens, and label-query pooling."""

    logit_fusion: Bool = True
    cross_attention: Bool = True
    residual: Bool = True
    d_model: Count = 128  # d_model 128 / hidden 256 train 2.4x faster per sample than 256 / 512 on 2 cores
    heads: Count = 4
    dropout: Dropout = 0.1
    aux_weight: NonNegative = 0.2  # branch logits' own loss, so that logit fusion weighs meaningful predictions
    # The token projections' LayerNorm keeps its scale and shift (true, as trained before) or
    # leaves them to the Linear after it (false: the same functions, a cheaper backward pass).
    token_norm_affine: Bool = True
    label_query: Annotated[
        LabelQuerySettings | None,
        BeforeValidator(_label_query_in),
        AfterValidator(_label_query_out),
        Says("true, false or a mapping"),
    ] = field(default=None, metadata={"check": "label_query"})

    def __post_init__(self) -> None:
        if self.cross_attention:
            _heads_divide(self.d_model, self.heads)


@dataclass(frozen=True)
class AuxSettings:
    """``aux:``: the label-query model's auxiliary losses (aligning label features with the class
    names' text, and predicting the scene)."""

    align_weight: NonNegative = 0.1  # the alignment steers the label features; classification leads
    align_temperature: Positive = 0.1  # CLIP-like sharpness over ~20 class texts
    align_on: Literal["positives", "all"] = "positives"  # all: an absent object's feature pools background
    context_weight: NonNegative = 0.0  # > 0 turns the context task on
    n_contexts: Annotated[int, Strict(), Ge(2)] = 4  # ~18 COCO-like classes fall into a handful of scenes


@dataclass(frozen=True)
class FinetuneOptions:
    """``finetune_options:``: end-to-end fine-tuning (``finetune: true``) and trained top stages."""

    # bf16 autocast on a GPU that has it (else fp16 with a gradient scaler), and on a CPU that
    # computes bf16 natively (AVX512-BF16, AMX; elsewhere fp32), for fine-tuning and for trained
    # top stages (capfuse.models.finetune.amp_dtype_for). So a trained top stage's scores depend
    # on the CPU: a bf16 run and an fp32 run of one config differ by more than thread order does.
    amp: Bool = True
    encoder_lr_mult: NonNegative = 0.1  # encoders move 10x slower than the freshly initialised head (0: frozen)
    layer_decay: Share = 0.8  # and each block below the top 0.8x slower again
    loader_threads: Count = 8
    # Batches decoded ahead in a background thread while the current one trains (0: none). The
    # same batches and weights either way; it lets the decoding and the accelerator overlap.
    prefetch: CountOrOff = 2


Inputs = Annotated[tuple[Literal["image", "caption"], ...], MinLen(1)]


@dataclass(frozen=True)
class ModelSettings:
    """What every model kind reads. Pipeline-wide keys (seed, data, folds, pseudo) flow into each
    model's config unless it sets them; ``name`` and ``pseudo_round`` are set by the stages."""

    kind: str = ""
    name: Name | None = None
    seed: Seed = 42
    inputs: Inputs = ("image", "caption")
    pseudo: PseudoSettings = block(PseudoSettings)
    pseudo_round: CountOrOff = 0
    image_encoder: ImageEncoderSettings = block(ImageEncoderSettings)


LINEAR_SOLVERS = ("joint", "ovr")


@dataclass(frozen=True)
class LinearModelSettings(ModelSettings):
    """``kind: linear``: one-vs-rest logistic regression on cached image features and TF-IDF."""

    kind: Literal["linear"] = "linear"
    C: Positive = 1.0  # inverse L2 strength, shared by both blocks
    image_weight: NonNegative = 1.0  # block weights: how hard that one penalty pulls on each modality
    caption_weight: NonNegative = 1.0
    max_iter: Count = 300
    # joint: every class in one L-BFGS run (capfuse.models.logistic), one pass over the rows
    # serving all classes; ovr: sklearn's LogisticRegression class by class. The same objective
    # and stopping rule, so the same optimum to the solvers' tolerance.
    solver: Literal[LINEAR_SOLVERS] = "joint"
    tfidf: Mapping = field(default_factory=dict, metadata={"check": "tfidf"})  # capfuse.features.tfidf


@dataclass(frozen=True)
class NetModelSettings(ModelSettings):
    """``kind: net``: torch heads and fusion on cached features, or end to end (``finetune: true``)."""

    kind: Literal["net"] = "net"
    device: Device = "cpu"  # heads on cached features: a GPU would idle; finetune configs use cuda
    finetune: Bool = False  # true: backbone and caption encoder train end to end
    caption_encoder: CaptionEncoderSettings = block(CaptionEncoderSettings)
    image_head: Head = field(default_factory=HeadSettings, metadata={"check": "head"})
    caption_head: Head = field(default_factory=HeadSettings, metadata={"check": "head"})
    fusion: FusionSettings = block(FusionSettings)
    aux: AuxSettings = block(AuxSettings)
    train: TrainSettings = block(TrainSettings)
    finetune_options: FinetuneOptions = block(FinetuneOptions)

    def __post_init__(self) -> None:
        # Alignment re-reads cached test features; a fine-tuned model decodes its images itself.
        if self.finetune and self.image_encoder.align != "none":
            raise BadValue(
                "finetune", True, f"image_encoder.align = {self.image_encoder.align!r} needs cached features"
            )


MODEL_KINDS: dict[str, type[ModelSettings]] = {"linear": LinearModelSettings, "net": NetModelSettings}
