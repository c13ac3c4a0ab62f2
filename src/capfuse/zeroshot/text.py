"""The caption space the projector is trained into: label names and free text as vectors in it.

Label names go through ``capfuse.encoders.text.label_text_embeddings``, the one function that
turns class names into text vectors (the label-query models use it too); zero-shot asks it for
its averaged templates (``zeroshot.prompts``) as unit vectors. A search query is embedded raw:
it reads like a caption already. The encoder is built through the encoder registry, from the
``caption_encoder`` block the caption cache was made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from capfuse.encoders.registry import build_caption
from capfuse.encoders.text import TextEncoderSpec, encode, label_text_embeddings


@dataclass(frozen=True, eq=False)
class CaptionSpace:
    """A caption encoder with the spec (``max_len``, ``batch_size``) its caption cache used."""

    model: nn.Module
    tokenizer: object
    spec: TextEncoderSpec

    @classmethod
    def load(cls, spec_cfg: dict) -> CaptionSpace:
        """The encoder of a ``caption_encoder:`` block (as the config or a model's sidecar holds it)."""
        spec = TextEncoderSpec(**spec_cfg)
        model, tokenizer, _ = build_caption(spec.name, weights=spec.weights)
        return cls(model, tokenizer, spec)

    def labels(self, names: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``[C, E]``: each name read into every template, normalised and averaged."""
        if any(not str(n).replace("_", " ").strip() for n in names):
            raise ValueError(f"label names must be non-empty, got {list(names)}")
        return label_text_embeddings(
            [str(n) for n in names],
            self.model,
            self.tokenizer,
            prompts=tuple(prompts),
            max_len=self.spec.max_len,
            batch_size=self.spec.batch_size,
            unit=True,
        )

    def class_labels(self, terms: Sequence[Sequence[str]], prompts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``[C, E]`` of classes named by several terms (discovered names): every
        term read into every template, each term's vector averaged per class and normalised."""
        if all(len(t) == 1 for t in terms):
            return self.labels([t[0] for t in terms], prompts)
        vecs = self.labels([t for ts in terms for t in ts], prompts)
        out, i = [], 0
        for ts in terms:
            mean = vecs[i : i + len(ts)].mean(0)
            out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            i += len(ts)
        return np.stack(out).astype(vecs.dtype)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled vectors ``[N, E]`` of free texts, no template (not normalised)."""
        return encode(self.model, self.tokenizer, list(texts), self.spec.max_len)[2]
