"""The encoders that load with no network, registered by the name a config gives them.

``image_encoder.name`` and ``caption_encoder.name`` accept any timm model name and any
transformers model (hub id or local folder) when the hub is reachable. The registry lists the
ones that need nothing but the packages in ``requirements-weights.txt``: the embedded default
runs on them, and the test suite runs each forward and backward.

Every entry builds a module with one calling convention per modality:

* image: ``module(x [B, 3, H, W]) -> pooled [B, D]`` (a timm backbone without classifier;
  ``forward_features`` gives the map the token grid is pooled from);
* caption: ``module(captions: list[str]) -> (tokens [B, L, D], mask [B, L], pooled [B, D])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from capfuse.encoders.glove import GLOVE_PACKAGE, glove_features
from capfuse.encoders.image import create_backbone
from capfuse.encoders.text import create_text_encoder
from capfuse.encoders.weights import PACKAGED
from capfuse.nn.pooling import masked_mean
from capfuse.utils.registry import Registry


@dataclass(frozen=True)
class EncoderEntry:
    modality: str  # "image" or "caption"
    build: Callable[..., nn.Module]  # build(weights="auto") -> module
    trainable: bool = True  # False: a fixed lookup table (GloVe), nothing to fine-tune
    # Table encoders: ``lookup(captions, max_len) -> (pooled, tokens, mask)``. Their features
    # are looked up each run (faster than a cache), keyed by ``source`` (the package they ship in).
    lookup: Callable[[list[str], int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    source: str | None = None


ENCODERS = Registry("encoder")


class TransformerCaptionEncoder(nn.Module):
    """A transformers encoder plus its tokenizer; masked-mean pooling as sentence-transformers does."""

    def __init__(self, model: nn.Module, tokenizer, max_len: int = 32) -> None:
        super().__init__()
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len

    def forward(self, captions: list[str]):
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(captions), padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        return hidden, mask, masked_mean(hidden, mask)


class GloveCaptionEncoder(nn.Module):
    """GloVe 6B 50-d word vectors: a fixed table, so only what sits on top of it trains."""

    def __init__(self, max_len: int = 32) -> None:
        super().__init__()
        self.max_len = max_len

    def forward(self, captions: list[str]):
        pooled, tokens, mask = glove_features(list(captions), self.max_len)
        return (
            torch.from_numpy(tokens.astype(np.float32)),
            torch.from_numpy(mask.astype(bool)),
            torch.from_numpy(pooled),
        )


def _image(name: str) -> EncoderEntry:
    def build(weights: str = "auto") -> nn.Module:
        return build_image(name, weights=weights)[0]

    return EncoderEntry("image", build)


def _transformer(name: str) -> EncoderEntry:
    def build(weights: str = "auto") -> nn.Module:
        model, tokenizer, _ = create_text_encoder(name, weights=weights)
        return TransformerCaptionEncoder(model, tokenizer)

    return EncoderEntry("caption", build)


def build_image(name: str, *, weights: str = "auto", num_classes: int = 0, **kwargs) -> tuple[nn.Module, str]:
    """(backbone, weights source) for ``image_encoder.name``: a registered (packaged) backbone or
    any timm name; the one way the pipeline builds an image encoder."""
    return create_backbone(name, weights=weights, num_classes=num_classes, **kwargs)


def build_caption(name: str, *, weights: str = "auto"):
    """(model, tokenizer, weights source) of a transformers caption encoder: an alias, a folder
    or a hub id. Table encoders have no model: ask ``caption_entry(name).lookup`` first."""
    entry = caption_entry(name)
    if entry.lookup is not None:
        raise ValueError(f"caption encoder {name!r} is a lookup table: it has no transformer to build")
    return create_text_encoder(name, weights=weights)


def caption_entry(name: str) -> EncoderEntry:
    """The registered caption encoder ``name``, or a transformers one (hub id or local folder)."""
    if name in ENCODERS:
        entry = ENCODERS.get(name)
        if entry.modality != "caption":
            raise ValueError(f"{name!r} is an image encoder; caption_encoder.name needs a caption encoder")
        return entry
    return _transformer(name)


for _name in PACKAGED:
    ENCODERS.register(_name)(_image(_name))
ENCODERS.register("minilm")(_transformer("minilm"))
ENCODERS.register("glove")(
    EncoderEntry(
        "caption",
        lambda weights="auto": GloveCaptionEncoder(),
        trainable=False,
        lookup=glove_features,
        source=GLOVE_PACKAGE,
    )
)
