"""The projector and its losses: cached image features into the caption space (MKT-style, with MuMIC's loss).

``ImageProjector`` maps a frozen backbone's pooled vector (and, with MKT's local stream, its
token grid) to a unit vector in the caption encoder's space; ``clip_loss`` is CLIP's symmetric
InfoNCE against each image's own caption; ``ZeroShotNet`` holds the projector, the learned
temperature and MuMIC's optional seen-label term. Nothing here reads files or data sets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from capfuse.nn.losses import LOSSES
from capfuse.zeroshot.settings import PROJECTOR_KINDS, ZeroShotSettings


class AttnPool(nn.Module):
    """A learned query attends over the image tokens: MKT's local stream, on the cached grid.

    Dot-product attention of one query against the (normalised) tokens, without key/value
    projections: at 1280 channels those would cost ~30x the rest of the projector on a CPU,
    and the MLP after the pool already mixes channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))  # zeros: starts as the mean over tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(tokens @ self.query * tokens.shape[-1] ** -0.5, dim=1)  # [B, T]
        return (weights.unsqueeze(-1) * tokens).sum(1)


class ImageProjector(nn.Module):
    """Cached image features ``pooled [B, D]`` (and ``tokens [B, T, D]``) to unit vectors ``[B, E]``."""

    def __init__(
        self,
        img_dim: int,
        text_dim: int,
        *,
        kind: str = "mlp",
        hidden: int = 512,
        dropout: float = 0.1,
        tokens: bool = False,
    ) -> None:
        super().__init__()
        if kind not in PROJECTOR_KINDS:
            raise ValueError(f"projector kind must be one of {PROJECTOR_KINDS}, got {kind!r}")
        self.uses_tokens = bool(tokens)
        # The backbone's features are post-activation and unnormalised; LayerNorm puts pooled
        # and attended vectors on one scale before they are joined.
        self.norm = nn.LayerNorm(img_dim)
        self.local = AttnPool(img_dim) if tokens else None
        in_dim = img_dim * (2 if tokens else 1)
        if kind == "linear":
            self.body: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, text_dim))
        else:
            self.body = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_dim, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, text_dim),
            )

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(pooled.float())
        if self.local is not None:
            if tokens is None:
                raise ValueError("this projector has a local stream: pass the image tokens too")
            x = torch.cat([x, self.local(self.norm(tokens.float()))], dim=-1)
        return F.normalize(self.body(x), dim=-1)


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between unit vectors ``image [B, E]`` and ``text [B, E]``: row i's pair is i.

    Identical captions in a batch ("A stop sign.") need no special case: their logit columns are
    equal, so the loss and its gradients are the same however the target is split among them.
    """
    logits = scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ZeroShotNet(nn.Module):
    """Projector, learned contrastive temperature and the optional seen-label term.

    ``forward(batch)`` returns ``embedding`` and, when the batch holds ``caption`` vectors,
    ``loss`` (and its parts). ``label_text [S, E]`` are the SEEN classes' prompt embeddings;
    ``batch["labels"] [B, S]`` their targets and ``batch["labelled"] [B]`` which rows have labels.
    """

    def __init__(
        self, img_dim: int, text_dim: int, settings: ZeroShotSettings, label_text: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        s = settings
        self.projector = ImageProjector(
            img_dim, text_dim, kind=s.kind, hidden=s.hidden, dropout=s.dropout, tokens=s.tokens
        )
        log_scale = torch.tensor(math.log(1.0 / s.temperature))
        self.log_scale = nn.Parameter(log_scale) if s.learn_temperature else None
        self.register_buffer("fixed_log_scale", log_scale.clone())  # its own storage: safetensors refuses shared ones
        self.label_weight = float(s.label_weight)
        if self.label_weight > 0 and label_text is not None and len(label_text):
            self.register_buffer("label_text", F.normalize(label_text.float(), dim=-1))
            # A cosine lies in [-1, 1]: an affine map (shared by every class, so that it carries
            # over to classes it never saw) turns it into a usable logit.
            self.label_scale = nn.Parameter(torch.tensor(10.0))
            self.label_bias = nn.Parameter(torch.tensor(-5.0))
            self.label_loss = LOSSES.create(**s.label_loss)
        else:
            self.label_text = None

    @property
    def scale(self) -> torch.Tensor:
        # CLIP clamps the learned scale at 100 so the softmax cannot collapse onto one pair.
        log_scale = self.log_scale if self.log_scale is not None else self.fixed_log_scale
        return log_scale.exp().clamp(max=100.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.projector(batch["img_pooled"], batch.get("img_tokens"))
        out = {"embedding": z}
        if "caption" not in batch:
            return out
        text = F.normalize(batch["caption"].float(), dim=-1)
        loss = clip_loss(z, text, self.scale)
        out["contrastive"] = loss.detach()
        if self.label_text is not None and "labels" in batch:
            logits = self.label_scale * z @ self.label_text.T + self.label_bias
            mask = batch["labelled"].float().unsqueeze(1).expand_as(logits)
            label_loss = self.label_loss(logits, batch["labels"].float(), mask=mask)
            out["label"] = label_loss.detach()
            loss = loss + self.label_weight * label_loss
        out["loss"] = loss
        return out
