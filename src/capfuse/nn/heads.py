"""Branch heads: pooled-vector MLPs and attention pooling over tokens.

Every head maps one modality to ``(features [B, hidden], logits [B, C])``: the features feed
fusion, the logits are the branch's own prediction (logit fusion weighs them). Inputs pass
through LayerNorm first because cached features arrive on very different scales (float16 CNN
activations vs. transformer states).
"""

from __future__ import annotations

import torch
from torch import nn

from capfuse.registry import Registry

HEADS = Registry("head")


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear, on the pooled vector."""

    uses_tokens = False

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.3, **_: object) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(pooled)
        return h, self.out(h)


@HEADS.register("attn")
class AttnHead(nn.Module):
    """Attention pooling over tokens with learned queries, plus the masked mean as a residual.

    Several queries let the head look at several regions (or words); their outputs are
    concatenated with the mean token, so the head can do no worse than mean pooling.
    """

    uses_tokens = True

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.3, queries: int = 4,
                 heads: int = 4, **_: object) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden))
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.body = nn.Sequential(nn.LayerNorm(hidden * (queries + 1)), nn.Linear(hidden * (queries + 1), hidden),
                                  nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor | None, tokens: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(tokens)  # [B, T, H]
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        attended, _ = self.attn(q, x, x, key_padding_mask=None if mask is None else ~mask, need_weights=False)
        mean = masked_mean(x, mask)
        h = self.body(torch.cat([attended.flatten(1), mean], dim=1))
        return h, self.out(h)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
