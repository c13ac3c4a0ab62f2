"""The fusion model (learned logit fusion and cross-attention), built from a config, every part switchable for ablation.

* branch heads: image (pooled MLP or attention over the token grid) and caption (pooled MLP or
  attention over word tokens), each with its own logits;
* cross-attention: caption tokens attend to image tokens and image tokens to caption tokens,
  each with a residual connection back to the branch's own tokens, pooled into a joint
  classifier (``xattn_logits``);
* logit fusion: a learned per-class softmax weighting of the branch logits (and the
  cross-attention logits), initialised equal, so each class leans on the modality that
  predicts it best;
* with both fusion parts off and two inputs: early fusion (concatenated pooled features, one MLP).

Label-query pooling with semantic alignment and its context task, each off unless its config says so:

* ``fusion.label_query`` (``true`` or a mapping of ``LabelQueryHead``'s options, plus
  ``caption_tokens``): one query per class, started from the class prompt's text embedding,
  pools the image tokens (and the caption tokens) into a feature per label; its logits are
  the tempered cosine to the class texts (``lq_logits``); it reads the cross-attention's
  projected tokens when both exist (``share_projection``). With logit fusion on it is one more
  branch of the weighting; otherwise it is the model's classifier. ``align_scores`` (each
  label feature's cosine with its own text) are in the output for pseudo-labelling.
* ``aux.align_weight``: the one-to-one alignment loss of the label features with the label
  texts, over the positives (``aux.align_on: all`` adds the negatives), at temperature
  ``aux.align_temperature``.
* ``aux.context_weight`` > 0: the context auxiliary task: a linear head on the joint features
  of every branch predicts which of ``aux.n_contexts`` co-occurrence contexts are present
  (``capfuse.nn.contexts``); the class -> context map comes from the training rows' labels.

Auxiliary losses are in ``out["aux_losses"]`` (unweighted) and, weighted, in ``out["loss"]``.

``forward(batch)`` returns a dict with ``logits`` (and each branch's logits), plus ``loss``
when the batch holds ``targets`` and a loss was attached (``net.loss_fn``). Branch logits get
an auxiliary loss (``fusion.aux_weight``) so that logit fusion weighs meaningful predictions.
"""

from __future__ import annotations

import torch
from torch import nn

from capfuse.config.check import resolve_checked
from capfuse.config.schema import HeadSettings, NetModelSettings, resolve_model
from capfuse.nn.contexts import context_membership, context_targets
from capfuse.nn.heads import HEADS, LabelQueryHead, MLPHead, token_projection
from capfuse.nn.losses import BCELoss, alignment_loss
from capfuse.nn.pooling import masked_mean

# Every setting (and its default) is a field of capfuse.config.schema.NetModelSettings: fusion,
# fusion.label_query (LabelQuerySettings), aux (AuxSettings), image_head/caption_head. The label-query
# parts are off by default, so a config without them keeps its resolved form (and its run
# fingerprint).


def net_settings(cfg: dict | NetModelSettings) -> NetModelSettings:
    """A net model's settings; a config dict (built in code: not checked as it loaded) is checked first."""
    return resolve_checked(cfg, kind="net")


def needs_class_text(cfg: dict | NetModelSettings) -> bool:
    """Does this model config need the class prompts' text embeddings (``class_text``) to build?"""
    return resolve_model(cfg, kind="net").fusion.label_query is not None


def uses_contexts(cfg: dict | NetModelSettings) -> bool:
    """Does this model config need a class -> context map (``context_map``) to build?"""
    return resolve_model(cfg, kind="net").aux.context_weight > 0


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class CrossAttentionFusion(nn.Module):
    def __init__(
        self,
        img_dim: int,
        cap_dim: int,
        num_classes: int,
        d_model: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        residual: bool = True,
        norm_affine: bool = True,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.img_proj = token_projection(img_dim, d_model, norm_affine)
        self.cap_proj = token_projection(cap_dim, d_model, norm_affine)
        self.cap_to_img = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.img_to_cap = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_cap, self.norm_img = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.head = nn.Sequential(
            nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, num_classes)
        )

    def project(self, img_tokens, cap_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Both modalities' tokens in the ``d_model`` space (the label-query head may share them)."""
        return self.img_proj(img_tokens), self.cap_proj(cap_tokens)

    def forward(self, img_tokens, cap_tokens, cap_mask, projected: bool = False) -> torch.Tensor:
        """The joint vector ``[B, 2 d_model]`` (pooled attended caption and image tokens); ``classify``
        turns it into logits. ``projected``: the tokens already went through ``project``."""
        img, cap = (img_tokens, cap_tokens) if projected else self.project(img_tokens, cap_tokens)
        pad = None if cap_mask is None else ~cap_mask
        cap_att, _ = self.cap_to_img(cap, img, img, need_weights=False)  # words look at regions
        img_att, _ = self.img_to_cap(img, cap, cap, key_padding_mask=pad, need_weights=False)  # regions look at words
        if self.residual:
            cap_att, img_att = cap_att + cap, img_att + img
        cap_vec = masked_mean(self.norm_cap(cap_att), cap_mask)
        img_vec = self.norm_img(img_att).mean(1)
        return torch.cat([cap_vec, img_vec], dim=1)

    def classify(self, joint: torch.Tensor) -> torch.Tensor:
        return self.head(joint)


class CapFuseNet(nn.Module):
    """``class_text [C, D]``: the class prompts' embeddings (needed by ``fusion.label_query``);
    ``context_map [C]``: each class's context (needed by ``aux.context_weight`` > 0)."""

    def __init__(
        self, cfg: dict | NetModelSettings, dims: dict, num_classes: int, class_text=None, context_map=None
    ) -> None:
        super().__init__()
        settings = net_settings(cfg)
        self.inputs = list(settings.inputs)
        if not self.inputs or set(self.inputs) - {"image", "caption"}:
            raise ValueError(f"net inputs must be a non-empty subset of [image, caption], got {self.inputs}")
        fusion = settings.fusion
        both = len(self.inputs) == 2
        lq = fusion.label_query
        self.aux = settings.aux
        if settings.train.calibrate:
            # [scale, shift] of the output logits: identity while training, then fitted on the
            # stopping rows (capfuse.nn.calibration); a buffer, so checkpoints and bundles keep it.
            self.register_buffer("logit_affine", torch.tensor([1.0, 0.0]))
        self.use_logit_fusion = both and fusion.logit_fusion
        # Without logit fusion to weigh it against other branches, the label-query head is the classifier.
        self.lq_only = lq is not None and not self.use_logit_fusion
        self.use_xattn = both and fusion.cross_attention and not self.lq_only
        self.early = both and not self.use_logit_fusion and not self.use_xattn and not self.lq_only
        self.aux_weight = fusion.aux_weight if self.use_logit_fusion else 0.0
        self.loss_fn: nn.Module | None = None

        self.image_head = self.caption_head = None
        if not self.early and not self.lq_only and (not both or self.use_logit_fusion):
            if "image" in self.inputs:
                self.image_head = self._head(settings.image_head, dims, "img", num_classes)
            if "caption" in self.inputs:
                self.caption_head = self._head(settings.caption_head, dims, "cap", num_classes)
        self.xattn = None
        if self.use_xattn:
            self.xattn = CrossAttentionFusion(
                dims["img_tokens"],
                dims["cap_tokens"],
                num_classes,
                fusion.d_model,
                fusion.heads,
                fusion.dropout,
                fusion.residual,
                fusion.token_norm_affine,
            )
        self.early_head = None
        if self.early:
            spec = settings.image_head
            self.early_head = MLPHead(dims["img_pooled"] + dims["cap_pooled"], num_classes, spec.hidden, spec.dropout)
        self.label_query = None
        self.lq_shared = False
        if lq is not None:
            if "image" not in self.inputs:
                raise ValueError("fusion.label_query pools image tokens: the model's inputs must include image")
            if class_text is None:
                raise ValueError("fusion.label_query needs the class prompts' text embeddings (class_text)")
            if len(class_text) != num_classes:
                raise ValueError(f"class_text has {len(class_text)} rows for {num_classes} classes")
            with_caption = lq.caption_tokens
            if with_caption and "caption" not in self.inputs:
                raise ValueError("fusion.label_query.caption_tokens needs caption among the model's inputs")
            self.lq_shared = lq.share_projection and self.xattn is not None and lq.d_model == fusion.d_model
            self.label_query = LabelQueryHead(
                dims["img_tokens"],
                torch.as_tensor(class_text, dtype=torch.float32),
                dims["cap_tokens"] if with_caption else None,
                lq.d_model,
                lq.heads,
                lq.dropout,
                lq.temperature,
                lq.learn_temperature,
                project_inputs=not self.lq_shared,
                norm_affine=fusion.token_norm_affine,
            )
        n_branches = (
            (self.image_head is not None)
            + (self.caption_head is not None)
            + (self.xattn is not None)
            + (self.label_query is not None)
        )
        # Zeros: a softmax over equal scores starts every class at an even mix of the branches.
        self.branch_scores = nn.Parameter(torch.zeros(n_branches, num_classes)) if self.use_logit_fusion else None

        self.context_head = None
        if self.aux.context_weight > 0:
            if context_map is None:
                raise ValueError(
                    "aux.context_weight > 0 needs the class -> context map of the training rows (context_map)"
                )
            context_map = torch.as_tensor(context_map, dtype=torch.long)
            n_contexts = self.aux.n_contexts
            if (
                context_map.shape != (num_classes,)
                or int(context_map.min()) < 0
                or int(context_map.max()) >= n_contexts
            ):
                raise ValueError(f"context_map must give each of {num_classes} classes a context in [0, {n_contexts})")
            self.register_buffer("context_members", context_membership(context_map.numpy(), n_contexts))
            width = sum(m.out_dim for m in (self.image_head, self.caption_head, self.early_head) if m is not None)
            width += 2 * fusion.d_model if self.xattn is not None else 0
            width += lq.d_model if self.label_query is not None else 0
            # Linear on the joint features: the shared layers must carry the context, not this head.
            self.context_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_contexts))
            self.context_loss = BCELoss()

    def input_keys(self) -> frozenset[str]:
        """The cached features ``forward`` reads: the batches gather these and nothing else."""
        keys: set[str] = set()
        if self.early_head is not None:
            keys |= {"img_pooled", "cap_pooled"}
        for head, prefix in ((self.image_head, "img"), (self.caption_head, "cap")):
            if head is not None:
                keys |= {f"{prefix}_tokens", "cap_mask"} if head.uses_tokens else {f"{prefix}_pooled"}
        if self.xattn is not None:
            keys |= {"img_tokens", "cap_tokens", "cap_mask"}
        if self.label_query is not None:
            keys |= {"img_tokens"} | ({"cap_tokens", "cap_mask"} if self.label_query.use_captions else set())
        return frozenset(k for k in keys if k != "cap_mask" or "caption" in self.inputs)

    @staticmethod
    def _head(spec: HeadSettings, dims: dict, prefix: str, num_classes: int) -> nn.Module:
        cls = HEADS.get(spec.kind)
        in_dim = dims[f"{prefix}_tokens"] if cls.uses_tokens else dims[f"{prefix}_pooled"]
        return cls(in_dim, num_classes, **spec.kwargs())

    @staticmethod
    def _run(head: nn.Module, batch: dict, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch.get("cap_mask") if prefix == "cap" else None
        return head(batch.get(f"{prefix}_pooled"), batch.get(f"{prefix}_tokens"), mask)

    def forward(self, batch: dict) -> dict:
        out: dict = {}
        branches, joint = [], []  # branch logits; branch features (the context head reads them)
        lq = None
        if self.early_head is not None:
            h, out["logits"] = self.early_head(torch.cat([batch["img_pooled"], batch["cap_pooled"]], dim=1))
            joint.append(h)
        else:
            if self.image_head is not None:
                h, out["image_logits"] = self._run(self.image_head, batch, "img")
                branches.append(out["image_logits"])
                joint.append(h)
            if self.caption_head is not None:
                h, out["caption_logits"] = self._run(self.caption_head, batch, "cap")
                branches.append(out["caption_logits"])
                joint.append(h)
            tokens = (batch.get("img_tokens"), batch.get("cap_tokens"))
            if self.xattn is not None:
                projected = self.xattn.project(*tokens)
                h = self.xattn(*projected, batch.get("cap_mask"), projected=True)
                out["xattn_logits"] = self.xattn.classify(h)
                branches.append(out["xattn_logits"])
                joint.append(h)
                if self.label_query is not None and self.lq_shared:
                    tokens = projected
            if self.label_query is not None:
                lq = self.label_query(*tokens, batch.get("cap_mask"))
                out["lq_logits"], out["align_scores"] = lq["logits"], lq["align"]
                branches.append(out["lq_logits"])
                joint.append(lq["features"].mean(1))
            if self.branch_scores is not None:
                weights = torch.softmax(self.branch_scores, dim=0)  # [branches, C]
                out["logits"] = (torch.stack(branches) * weights.unsqueeze(1)).sum(0)
            else:
                out["logits"] = branches[0]
        if self.context_head is not None:
            out["context_logits"] = self.context_head(torch.cat(joint, dim=1))
        if "targets" in batch and self.loss_fn is not None:
            targets, mask, sw = batch["targets"], batch.get("target_mask"), batch.get("sample_weight")
            loss = self.loss_fn(out["logits"], targets, mask, sw)
            if self.aux_weight:
                for key in ("image_logits", "caption_logits", "xattn_logits", "lq_logits"):
                    if key in out:
                        loss = loss + self.aux_weight * self.loss_fn(out[key], targets, mask, sw)
            aux = {}
            if lq is not None and self.aux.align_weight > 0:
                weight = torch.ones_like(targets) if mask is None else mask.float()
                if self.aux.align_on == "positives":
                    weight = weight * (targets >= 0.5).float()
                if sw is not None:
                    weight = weight * sw.float().unsqueeze(1)
                aux["align"] = (
                    self.aux.align_weight,
                    alignment_loss(
                        lq["text_features"], self.label_query.class_text, weight, self.aux.align_temperature
                    ),
                )
            if self.context_head is not None:
                ctx, ctx_mask = context_targets(targets.float(), self.context_members, mask)
                aux["context"] = (self.aux.context_weight, self.context_loss(out["context_logits"], ctx, ctx_mask, sw))
            for weight_, value in aux.values():
                loss = loss + weight_ * value
            out["aux_losses"] = {key: value for key, (_, value) in aux.items()}
            out["loss"] = loss
        if hasattr(self, "logit_affine"):  # after the loss, which trains the raw logits
            out["logits"] = out["logits"] * self.logit_affine[0] + self.logit_affine[1]
        return out


class TopBlocksNet(nn.Module):
    """A backbone's pretrained top stages, trained on their cached input, under a head or fusion net.

    The CPU path's middle ground between frozen features and full fine-tuning: the map entering
    the top stages (``img_mid``) is cached once; the stages above it adapt to the task.
    """

    def __init__(
        self,
        top: nn.Module,
        head: CapFuseNet,
        grid: int = 4,
        pooling: str = "mean",
        amp_dtype=None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        # channels_last: oneDNN's convolutions, forward and backward, run faster on it than on
        # the cached map's NCHW, in fp32 and bf16 alike (`capfuse bench --only top-stage`).
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.top = top.to(memory_format=self.layout)
        self.head, self.grid, self.pooling = head, grid, pooling
        self.amp_dtype = amp_dtype  # the top stages run under autocast to this dtype (None: fp32)

    @staticmethod
    def pooled_width(width: int, mid_channels: int, pooling: str) -> int:
        """The width of ``img_pooled`` for a final map of ``width`` channels."""
        return 2 * width + mid_channels if pooling == "multilevel" else width

    def features(self, batch: dict) -> dict:
        """The batch with ``img_pooled`` and ``img_tokens`` computed from ``img_mid``.

        ``multilevel``: the trained final map's mean and max, and the mean of the map entering
        the trained stages, as the frozen cache's multi-level vector is made (the max keeps a
        small object's peak; the entering map keeps the mid-level parts the top stages rework).
        """
        mid = batch["img_mid"]
        with torch.autocast(mid.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            fmap = self.top(mid.float().contiguous(memory_format=self.layout))
        fmap = fmap.float()
        tokens = nn.functional.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        pooled = fmap.mean((2, 3))
        if self.pooling == "multilevel":
            pooled = torch.cat([pooled, fmap.amax((2, 3)), mid.float().mean((2, 3))], 1)
        return {**batch, "img_pooled": pooled, "img_tokens": tokens}

    def input_keys(self) -> frozenset[str]:
        """The head's keys, with the image read from the cached map entering the top stages."""
        return (self.head.input_keys() - {"img_pooled", "img_tokens"}) | {"img_mid"}

    def forward(self, batch: dict) -> dict:
        return self.head(self.features(batch))


def build_net(
    cfg: dict | NetModelSettings, dims: dict, num_classes: int, class_text=None, context_map=None
) -> CapFuseNet:
    return CapFuseNet(cfg, dims, num_classes, class_text=class_text, context_map=context_map)
