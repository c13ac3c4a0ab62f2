"""The fusion model of paper (a), built from a config, with every part switchable for ablation.

* branch heads: image (pooled MLP or attention over the token grid) and caption (pooled MLP or
  attention over word tokens), each with its own logits;
* cross-attention: caption tokens attend to image tokens and image tokens to caption tokens,
  each with a residual connection back to the branch's own tokens, pooled into a joint
  classifier (``xattn_logits``);
* logit fusion: a learned per-class softmax weighting of the branch logits (and the
  cross-attention logits), initialised equal, so each class leans on the modality that
  predicts it best;
* with both fusion parts off and two inputs: early fusion (concatenated pooled features, one MLP).

``forward(batch)`` returns a dict with ``logits`` (and each branch's logits), plus ``loss``
when the batch holds ``targets`` and a loss was attached (``net.loss_fn``). Branch logits get
an auxiliary loss (``fusion.aux_weight``) so that logit fusion weighs meaningful predictions.
"""

from __future__ import annotations

import torch
from torch import nn

from capfuse.nn.heads import HEADS, MLPHead, masked_mean


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class CrossAttentionFusion(nn.Module):
    def __init__(self, img_dim: int, cap_dim: int, num_classes: int, d_model: int = 256, heads: int = 4,
                 dropout: float = 0.1, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.img_proj = nn.Sequential(nn.LayerNorm(img_dim), nn.Linear(img_dim, d_model))
        self.cap_proj = nn.Sequential(nn.LayerNorm(cap_dim), nn.Linear(cap_dim, d_model))
        self.cap_to_img = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.img_to_cap = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_cap, self.norm_img = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(d_model, num_classes))

    def forward(self, img_tokens, cap_tokens, cap_mask) -> torch.Tensor:
        img = self.img_proj(img_tokens)
        cap = self.cap_proj(cap_tokens)
        pad = None if cap_mask is None else ~cap_mask
        cap_att, _ = self.cap_to_img(cap, img, img, need_weights=False)  # words look at regions
        img_att, _ = self.img_to_cap(img, cap, cap, key_padding_mask=pad, need_weights=False)  # regions look at words
        if self.residual:
            cap_att, img_att = cap_att + cap, img_att + img
        cap_vec = masked_mean(self.norm_cap(cap_att), cap_mask)
        img_vec = self.norm_img(img_att).mean(1)
        return self.head(torch.cat([cap_vec, img_vec], dim=1))


class CapFuseNet(nn.Module):
    def __init__(self, cfg: dict, dims: dict, num_classes: int) -> None:
        super().__init__()
        self.inputs = list(cfg.get("inputs", ["image", "caption"]))
        if not self.inputs or set(self.inputs) - {"image", "caption"}:
            raise ValueError(f"net inputs must be a non-empty subset of [image, caption], got {self.inputs}")
        fusion = {"logit_fusion": True, "cross_attention": True, "residual": True, "d_model": 256, "heads": 4,
                  "dropout": 0.1, "aux_weight": 0.2, **cfg.get("fusion", {})}
        both = len(self.inputs) == 2
        self.use_logit_fusion = both and bool(fusion["logit_fusion"])
        self.use_xattn = both and bool(fusion["cross_attention"])
        self.early = both and not self.use_logit_fusion and not self.use_xattn
        self.aux_weight = float(fusion["aux_weight"]) if self.use_logit_fusion else 0.0
        self.loss_fn: nn.Module | None = None

        self.image_head = self.caption_head = None
        if not self.early and (not both or self.use_logit_fusion):
            if "image" in self.inputs:
                self.image_head = self._head(cfg.get("image_head", {}), dims, "img", num_classes)
            if "caption" in self.inputs:
                self.caption_head = self._head(cfg.get("caption_head", {}), dims, "cap", num_classes)
        self.xattn = None
        if self.use_xattn:
            self.xattn = CrossAttentionFusion(dims["img_tokens"], dims["cap_tokens"], num_classes, int(fusion["d_model"]),
                                              int(fusion["heads"]), float(fusion["dropout"]), bool(fusion["residual"]))
        self.early_head = None
        if self.early:
            spec = cfg.get("image_head", {})
            self.early_head = MLPHead(dims["img_pooled"] + dims["cap_pooled"], num_classes,
                                      int(spec.get("hidden", 512)), float(spec.get("dropout", 0.3)))
        n_branches = (self.image_head is not None) + (self.caption_head is not None) + (self.xattn is not None)
        # Zeros: a softmax over equal scores starts every class at an even mix of the branches.
        self.branch_scores = nn.Parameter(torch.zeros(n_branches, num_classes)) if self.use_logit_fusion else None

    @staticmethod
    def _head(spec: dict, dims: dict, prefix: str, num_classes: int) -> nn.Module:
        spec = {"kind": "mlp", **spec}
        cls = HEADS.get(spec.pop("kind"))
        in_dim = dims[f"{prefix}_tokens"] if cls.uses_tokens else dims[f"{prefix}_pooled"]
        return cls(in_dim, num_classes, **spec)

    @staticmethod
    def _run(head: nn.Module, batch: dict, prefix: str) -> torch.Tensor:
        mask = batch.get("cap_mask") if prefix == "cap" else None
        return head(batch.get(f"{prefix}_pooled"), batch.get(f"{prefix}_tokens"), mask)[1]

    def forward(self, batch: dict) -> dict:
        out: dict = {}
        branches = []
        if self.early_head is not None:
            out["logits"] = self.early_head(torch.cat([batch["img_pooled"], batch["cap_pooled"]], dim=1))[1]
        else:
            if self.image_head is not None:
                out["image_logits"] = self._run(self.image_head, batch, "img")
                branches.append(out["image_logits"])
            if self.caption_head is not None:
                out["caption_logits"] = self._run(self.caption_head, batch, "cap")
                branches.append(out["caption_logits"])
            if self.xattn is not None:
                out["xattn_logits"] = self.xattn(batch["img_tokens"], batch["cap_tokens"], batch.get("cap_mask"))
                branches.append(out["xattn_logits"])
            if self.branch_scores is not None:
                weights = torch.softmax(self.branch_scores, dim=0)  # [branches, C]
                out["logits"] = (torch.stack(branches) * weights.unsqueeze(1)).sum(0)
            else:
                out["logits"] = branches[0]
        if "targets" in batch and self.loss_fn is not None:
            mask, sw = batch.get("target_mask"), batch.get("sample_weight")
            loss = self.loss_fn(out["logits"], batch["targets"], mask, sw)
            if self.aux_weight:
                for key in ("image_logits", "caption_logits", "xattn_logits"):
                    if key in out:
                        loss = loss + self.aux_weight * self.loss_fn(out[key], batch["targets"], mask, sw)
            out["loss"] = loss
        return out


class TopBlocksNet(nn.Module):
    """A backbone's pretrained top stages, trained on their cached input, under a head or fusion net.

    The CPU path's middle ground between frozen features and full fine-tuning: the map entering
    the top stages (``img_mid``) is cached once; the stages above it adapt to the task.
    """

    def __init__(self, top: nn.Module, head: CapFuseNet, grid: int = 4) -> None:
        super().__init__()
        self.top, self.head, self.grid = top, head, grid

    def features(self, batch: dict) -> dict:
        """The batch with ``img_pooled`` and ``img_tokens`` computed from ``img_mid``."""
        fmap = self.top(batch["img_mid"])
        tokens = nn.functional.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        return {**batch, "img_pooled": fmap.mean((2, 3)), "img_tokens": tokens}

    def forward(self, batch: dict) -> dict:
        return self.head(self.features(batch))


def build_net(cfg: dict, dims: dict, num_classes: int) -> CapFuseNet:
    return CapFuseNet(cfg, dims, num_classes)
