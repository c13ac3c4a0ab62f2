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

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from capfuse.encoders.weights import PACKAGED
from capfuse.registry import Registry


@dataclass(frozen=True)
class EncoderEntry:
    modality: str  # "image" or "caption"
    build: Callable[..., nn.Module]  # build(weights="auto") -> module
    trainable: bool = True  # False: a fixed lookup table (GloVe), nothing to fine-tune


ENCODERS = Registry("encoder")


class TransformerCaptionEncoder(nn.Module):
    """A transformers encoder plus its tokenizer; masked-mean pooling as sentence-transformers does."""

    def __init__(self, model: nn.Module, tokenizer, max_len: int = 32) -> None:
        super().__init__()
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len

    def forward(self, captions: list[str]):
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_len,
                               return_tensors="pt").to(device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return hidden, mask, (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class GloveCaptionEncoder(nn.Module):
    """GloVe 6B 50-d word vectors: a fixed table, so only what sits on top of it trains."""

    def __init__(self, max_len: int = 32) -> None:
        super().__init__()
        self.max_len = max_len

    def forward(self, captions: list[str]):
        from capfuse.text_features import glove_features

        pooled, tokens, mask = glove_features(list(captions), self.max_len)
        return (torch.from_numpy(tokens.astype(np.float32)), torch.from_numpy(mask.astype(bool)),
                torch.from_numpy(pooled))


def _image(name: str) -> EncoderEntry:
    def build(weights: str = "auto") -> nn.Module:
        from capfuse.encoders.image import create_backbone

        return create_backbone(name, weights=weights, num_classes=0)[0]

    return EncoderEntry("image", build)


def _minilm(weights: str = "auto") -> nn.Module:
    from capfuse.encoders.text import create_text_encoder

    model, tokenizer, _ = create_text_encoder("minilm", weights=weights)
    return TransformerCaptionEncoder(model, tokenizer)


for _name in PACKAGED:
    ENCODERS.register(_name)(_image(_name))
ENCODERS.register("minilm")(EncoderEntry("caption", _minilm))
ENCODERS.register("glove")(EncoderEntry("caption", lambda weights="auto": GloveCaptionEncoder(), trainable=False))
