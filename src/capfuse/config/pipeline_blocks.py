"""The pipeline's config blocks (data, folds, thresholds, second level, pseudo-label rounds, label
ratios, ablation) as frozen dataclasses: each field's type says what it accepts, its default is
the one default (``capfuse.config.schema`` says more)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import Strict

from capfuse.config.types import (
    BadValue,
    Bool,
    Count,
    CountOrOff,
    Float,
    Name,
    NonNegative,
    Probability,
    Share,
    Str,
)
from capfuse.config.values import exact


def block(cls: type) -> Any:
    """A nested block: a mapping checked and resolved as the dataclass ``cls``."""
    return field(default_factory=cls, metadata={"block": cls})


# numpy's and scikit-learn's generators take seeds in [0, 2**32); fold k trains with seed + k.
Seed = Annotated[int, Strict(), Ge(0), Lt(2**32)]

# Class names: auto reads classes.csv and, without one, discovers names from the captions
# (capfuse.data.names); discover does so beside a classes.csv too; numbers says "class N".
CLASS_NAMES = ("auto", "discover", "numbers")


@dataclass(frozen=True)
class DataSettings:
    """``data:``: how the dataset is read and checked."""

    strict: Bool = False  # quarantine unusable train rows and list them; true (STRICT=1) fails instead
    workers: Count = 2  # image checks in parallel: PIL releases the GIL while decoding
    unlabelled: Name | None = None  # extra folder of unlabelled images for pseudo-label rounds
    # Larger images are row errors, never decoded (bombs). 50 Mpx: above any photo a dataset
    # plausibly holds (phones give 12-48 Mpx, COMP5329 images are a few hundred pixels a side) and
    # well below Pillow's 179 Mpx bomb error. Decoded as RGBA it is 200 MB, so a couple of worker
    # threads stay under half a gigabyte.
    max_pixels: Count = 50_000_000
    class_names: Literal[CLASS_NAMES] = "auto"


@dataclass(frozen=True)
class FoldsSettings:
    """``folds:``: the multilabel-stratified K folds every model shares."""

    # Five folds: each model learns from 80 % of the labels, and every row gets an out-of-fold
    # prediction for the thresholds and the second level to be fitted on.
    k: Annotated[int, Strict(), Ge(2)] = 5
    seed: Seed = 42  # fixed, so folds/<dataset>.csv is the same on every machine
    # auto: near-duplicate training images (found from the first cached image model's vectors)
    # stay in one fold (docs/shift.md, "Grouped folds"). none: folds over rows, as random K-fold.
    groups: Literal["auto", "none"] = "none"
    # auto links two images closer than this share of the median distance of a training image to
    # its 10th nearest other one. On the demo, which holds no copies, even the closest pair sits a
    # little above it; most photos cropped by a few percent and re-encoded sit below it.
    group_ratio: Annotated[float, Strict(), Gt(0), Lt(1)] = 0.35
    # auto also measures each image against the others' mirror images, so a copy stored flipped
    # joins its source's group. The flipped view is cached where a model reads it (flip TTA);
    # elsewhere it costs one more pass over the images.
    group_mirror: Bool = True


@dataclass(frozen=True)
class ThresholdSettings:
    """``threshold:``: the decision rule and the threshold search."""

    # Never an empty label set: an image below every threshold takes its top-scoring class (0: it may get none).
    min_labels: CountOrOff = 1
    max_labels: Count | None = None  # null: no cap (COMP5329 images carry one to five labels); part of the study's key
    per_class: Bool | Literal["auto"] = "auto"  # per-class cut-offs, or only where their nested score wins
    trials: Count = 300  # Optuna trials per study; a coordinate-ascent polish follows, and more trials fit OOF noise
    storage: Name | None = None  # Optuna RDB URL; None: sqlite under runs/<dataset>/ensemble/

    def __post_init__(self) -> None:
        if self.max_labels is not None and self.max_labels < self.min_labels:
            raise BadValue("max_labels", self.max_labels, f"must be null or >= min_labels ({self.min_labels})")


CANDIDATES = ("best_single", "mean_blend", "weighted_blend", "stack")
ENSEMBLE_ROUNDS = ("all", "last")
SHIFT_CHOICE = ("auto", "always", "never")


@dataclass(frozen=True)
class EnsembleShiftSettings:
    """``ensemble.shift:``: the second level under a train/test shift (docs/shift.md)."""

    # auto: candidates are chosen on the test-like rows only when the shift report warns, so a
    # run without a shift keeps the choice by all rows; always or never force it either way.
    use: Literal[SHIFT_CHOICE] = "auto"
    # The test-like rows: this share of the training rows, the highest by shift_scores.csv. A
    # quarter keeps 500 rows of 2,000, enough for a mean F1 to be compared, while staying in
    # the tail the adversarial classifier tells apart; on data/shifted a tenth, a quarter and a
    # half rank the base models' falls alike, and the bootstrap noise of a fall nearly halves
    # from a tenth to a quarter.
    share: Share = 0.25
    # A base model is capped when its mean F1 falls from all rows to the test-like rows by this
    # much more than the median fall of the others: above the bootstrap standard error of that
    # excess for every base model of data/shifted at a quarter, so noise alone rarely caps one.
    tolerance: NonNegative = 0.01
    # The largest blend weight a capped model may keep (the stacker also stops splitting on its
    # columns): half, so it can still lead a blend but never be the whole of it.
    cap: Share = 0.5


@dataclass(frozen=True)
class EnsembleSettings:
    """``ensemble:``: which trained models feed the second level, and which candidates compete."""

    # all: the config's own models and their pseudo-label rounds (name@rK); other models trained in
    # runs/<dataset>/ by other configs are logged and left out. Or a list of names, which may include them.
    models: Literal["all"] | tuple[Name, ...] = "all"
    # With ``models: all``, which of a model's pseudo-label rounds enter: every one beside the
    # model (all), or only its last round, in place of the model and the earlier rounds (last).
    rounds: Literal[ENSEMBLE_ROUNDS] = "all"
    candidates: Annotated[tuple[Literal[CANDIDATES], ...], MinLen(1)] = (
        CANDIDATES  # the best nested OOF mean F1 is kept
    )
    # LightGBM parameters of the stacker (defaults: capfuse.ensemble.stack.DEFAULT_PARAMS), plus
    # ``num_rounds`` and ``init`` (blend or constant); checked by name against that module.
    stack: Mapping = field(default_factory=dict, metadata={"check": "stack"})
    shift: EnsembleShiftSettings = block(EnsembleShiftSettings)


@dataclass(frozen=True)
class RatiosSettings:
    """``ratios:``: label-ratio mode (the low-label setting of the label-query method: train on a
    share of the labels, pseudo-label the rest)."""

    # Shares of the training labels kept (stratified); the rest is unlabelled. 100 is the reference.
    percents: Annotated[tuple[Annotated[float, Strict(), Gt(0), Le(100)], ...], MinLen(1)] = (5.0, 10.0, 20.0, 100.0)
    models: Annotated[tuple[Name, ...], MinLen(1)] = (
        "fusion_labelquery",
    )  # its alignment scores can rank the pool (pseudo.scores: align)
    pseudo_rounds: CountOrOff = 2  # rounds after the labelled-only model; they stop when CV stops rising


@dataclass(frozen=True)
class PseudoSettings:
    """The ``pseudo:`` block: pseudo-label rounds on the unlabelled pool (capfuse.training.pseudo)."""

    rounds: CountOrOff = 0  # 0: no pseudo-label rounds
    pos_keep: Share = 0.6  # share of each class's expected positives kept as positives (most confident first)
    neg_keep: Share = 0.9  # share of each class's expected negatives kept as negatives (least likely first)
    soft: Bool = False  # True: kept entries get the producer's probability as target, not 0/1
    weight: NonNegative = 1.0  # the pseudo rows' loss weight once the ramp is complete
    ramp_epochs: NonNegative = 5.0  # the weight grows linearly from ~0 to ``weight`` over these epochs
    min_gain: Float = 0.0  # a round must raise CV mean F1 by more than this, or the rounds stop
    graph: Probability = 0.0  # weight of label propagation over a kNN graph of the features in the ranking (0: off)
    graph_k: Count = 10  # neighbours per row in that graph
    scores: Literal["logits", "align"] = (
        "logits"  # what ranks the pool: the producer's logits, or label-query alignment
    )

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> PseudoSettings:
        """The settings of a ``pseudo:`` mapping (stages merge a model's with their own), checked."""
        return exact(cls, cfg, prefix=("pseudo",))


@dataclass(frozen=True)
class AblationVariant:
    """One row of ``ablation.variants``: a model config, or one derived from ``base`` by ``set``."""

    name: Str = ""
    base: Name | None = None  # the registered model config it starts from (default: ``name``)
    group: Str = ""
    change: Str = ""
    set: Mapping = field(default_factory=dict, metadata={"check": "partial_config"})  # merged into the base
    pseudo: Mapping | None = field(default=None, metadata={"check": "pseudo_partial"})  # pseudo-label rounds on it


@dataclass(frozen=True)
class AblationSettings:
    """``ablation:`` (``make ablate``)."""

    reference: Name | None = None  # ``delta`` is each variant's CV mean F1 minus this one's
    second_level: Bool = True  # blends, stacker and threshold rows
    output: Name = "ablation"  # runs/<dataset>/<output>.{csv,md}
    # Each variant trains with this many seeds (seed, seed + 1000, ...): a row gives their mean
    # and its spread, so a difference can be read against what a seed alone moves.
    seeds: Count = 1
    variants: tuple[AblationVariant, ...] = field(default=(), metadata={"check": "variants"})


@dataclass(frozen=True)
class PipelineSettings:
    """The top level of a pipeline config (and of a model config given directly)."""

    seed: Seed = 42  # fold k trains with seed + k
    name: Name | None = None  # a model config given directly: the one model's name
    models: tuple[Name, ...] = ()  # the model configs (configs/models/<name>.yaml) a pipeline trains
    data: DataSettings = block(DataSettings)
    folds: FoldsSettings = block(FoldsSettings)
    threshold: ThresholdSettings = block(ThresholdSettings)
    ensemble: EnsembleSettings = block(EnsembleSettings)
    pseudo: PseudoSettings = block(PseudoSettings)
    ratios: RatiosSettings = block(RatiosSettings)
    ablation: AblationSettings = block(AblationSettings)
