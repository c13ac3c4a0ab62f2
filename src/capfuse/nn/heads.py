"""Branch heads: pooled-vector MLPs and attention pooling over tokens.

Every head maps one modality to ``(features [B, hidden], logits [B, C])``: the features feed
fusion, the logits are the branch's own prediction (logit fusion weighs them). Inputs pass
through LayerNorm first because cached features arrive on very different scales (float16 CNN
activations vs. transformer states).

``LabelQueryHead`` (label-query pooling) is not a branch head of this registry: it needs the class prompts'
text embeddings and yields one feature per label; ``CapFuseNet`` builds it from
``fusion.label_query``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from capfuse.config.check import register_components
from capfuse.nn.pooling import masked_mean
from capfuse.utils.registry import Registry

HEADS = Registry("head")
register_components("head", HEADS)  # a config's image_head/caption_head is checked against the chosen head's parameters


def token_projection(in_dim: int, d_model: int, affine: bool = True) -> nn.Sequential:
    """LayerNorm then Linear: cached token states into ``d_model``.

    ``affine=False`` drops the norm's scale and shift. A Linear right after it can absorb both
    (``W (g * x + b) = (W g) x + W b``), so the model can express the same functions, but the
    backward pass then stops at the Linear: with frozen cached inputs no gradient is computed
    for the 16 x 1,280 image tokens (a [B*16, d_model] x [d_model, 1,280] product and the norm's
    backward, every step).
    """
    return nn.Sequential(nn.LayerNorm(in_dim, elementwise_affine=affine), nn.Linear(in_dim, d_model))


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear, on the pooled vector."""

    uses_tokens = False

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.3, **_: object) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, num_classes)
        self.out_dim = hidden  # width of the features it returns, for heads stacked on them

    def forward(
        self, pooled: torch.Tensor, tokens: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(pooled)
        return h, self.out(h)


@HEADS.register("attn")
class AttnHead(nn.Module):
    """Attention pooling over tokens with learned queries, plus the masked mean as a residual.

    Several queries let the head look at several regions (or words); their outputs are
    concatenated with the mean token, so the head can do no worse than mean pooling.
    """

    uses_tokens = True

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden: int = 512,
        dropout: float = 0.3,
        queries: int = 4,
        heads: int = 4,
        **_: object,
    ) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden))
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.body = nn.Sequential(
            nn.LayerNorm(hidden * (queries + 1)),
            nn.Linear(hidden * (queries + 1), hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.out = nn.Linear(hidden, num_classes)
        self.out_dim = hidden

    def forward(
        self, pooled: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(tokens)  # [B, T, H]
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        attended, _ = self.attn(q, x, x, key_padding_mask=None if mask is None else ~mask, need_weights=False)
        mean = masked_mean(x, mask)
        h = self.body(torch.cat([attended.flatten(1), mean], dim=1))
        return h, self.out(h)


class LabelQueryHead(nn.Module):
    """Label-query pooling: label-specific features, one query per class pooling the image tokens.

    Each class's query starts from the projection of its prompt's text embedding ("a photo of
    a {name}."), attends to the image's token grid (and, with ``cap_dim``, the caption's tokens
    as well), and yields a feature for that label alone. The feature is projected back into the
    text space; the logit of class c is the scaled cosine between its feature and class c's text
    embedding plus a per-class bias. The scale is MuMIC's tempered-sigmoid temperature, learned: a sigmoid of
    ``cos / T``. ``forward`` returns a dict: ``features [B, C, d_model]``, ``text_features [B, C, D_text]``
    (unit norm, for the alignment loss ``capfuse.nn.losses.alignment_loss``), ``align [B, C]`` (each
    label feature's cosine with its own text: the alignment score) and ``logits [B, C]``.
    """

    def __init__(
        self,
        img_dim: int,
        class_text: torch.Tensor,
        cap_dim: int | None = None,
        d_model: int = 128,
        heads: int = 4,
        dropout: float = 0.1,
        temperature: float = 0.1,
        learn_temperature: bool = True,
        project_inputs: bool = True,
        norm_affine: bool = True,
    ) -> None:
        super().__init__()
        class_text = torch.as_tensor(class_text, dtype=torch.float32)
        if class_text.ndim != 2:
            raise ValueError(f"class_text must be [classes, dim], got shape {tuple(class_text.shape)}")
        if temperature <= 0:
            raise ValueError(f"label_query.temperature must be positive, got {temperature}")
        n_classes, text_dim = class_text.shape
        # Frozen targets of the alignment: unit-norm prompt embeddings.
        self.register_buffer("class_text", nn.functional.normalize(class_text, dim=1))
        self.query_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d_model))
        # Zero offsets: every query starts exactly at its projected prompt and may drift from it.
        self.query_offset = nn.Parameter(torch.zeros(n_classes, d_model))
        # project_inputs=False: the tokens arrive already in d_model (another module projected them).
        self.use_captions = cap_dim is not None
        self.img_proj = token_projection(img_dim, d_model, norm_affine) if project_inputs else nn.Identity()
        self.cap_proj = None
        if self.use_captions:
            self.cap_proj = token_projection(cap_dim, d_model, norm_affine) if project_inputs else nn.Identity()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        # No feed-forward block after the attention: label-query pooling only pools. A wider FFN
        # made each CPU step slower and gained nothing in the ablation.
        self.norm = nn.LayerNorm(d_model)
        self.to_text = nn.Linear(d_model, text_dim)
        log_scale = torch.tensor(-math.log(temperature))
        self.log_scale = nn.Parameter(log_scale) if learn_temperature else None
        if not learn_temperature:
            self.register_buffer("fixed_log_scale", log_scale)
        self.bias = nn.Parameter(torch.zeros(n_classes))

    @property
    def scale(self) -> torch.Tensor:
        log_scale = self.log_scale if self.log_scale is not None else self.fixed_log_scale
        return log_scale.clamp(max=4.6052).exp()  # at most 100, CLIP's cap: beyond it training turns unstable

    def forward(
        self, img_tokens: torch.Tensor, cap_tokens: torch.Tensor | None = None, cap_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        keys = self.img_proj(img_tokens)
        pad = None
        if self.use_captions:
            keys = torch.cat([keys, self.cap_proj(cap_tokens)], dim=1)
            if cap_mask is not None:
                img_pad = torch.zeros(keys.shape[0], img_tokens.shape[1], dtype=torch.bool, device=keys.device)
                pad = torch.cat([img_pad, ~cap_mask], dim=1)
        q = (self.query_proj(self.class_text) + self.query_offset).unsqueeze(0).expand(keys.shape[0], -1, -1)
        att, _ = self.attn(q, keys, keys, key_padding_mask=pad, need_weights=False)
        h = self.norm(q + att)  # [B, C, d_model]
        z = nn.functional.normalize(self.to_text(h), dim=-1)  # [B, C, D_text]
        cos = (z * self.class_text.unsqueeze(0)).sum(-1)  # each label's feature against its own text only
        return {"features": h, "text_features": z, "align": cos, "logits": self.scale * cos + self.bias}
