"""End-to-end fine-tuning of the ``net`` kind: backbone + caption encoder + head, on a GPU.

The same config as the cached CPU path plus ``finetune: true`` (and usually ``device: cuda``):
images are decoded at the backbone's size, captions tokenised once, and the whole model
trains with

* bf16 autocast where the GPU supports it, else fp16 with a gradient scaler; on a CPU, bf16
  where the CPU computes it natively (AVX512-BF16, AMX), else fp32;
* gradient accumulation (``train.accumulate``) and the shared cosine schedule with warm-up;
* layer-wise learning rates: the head at ``lr``, the encoders at ``lr * encoder_lr_mult``,
  decayed by ``layer_decay`` per block below the top, so the general low-level filters move
  least;
* several GPUs through torchrun and DistributedDataParallel (``make train GPUS=4``): each rank
  takes a disjoint shard of every epoch's order; rank 0 evaluates, checkpoints and writes.

On a CPU the same code runs with a tiny timm model, which is how the tests cover it.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from capfuse.config.check import resolve_checked
from capfuse.config.schema import NetModelSettings
from capfuse.data.images import load_array, resolve_image_path
from capfuse.encoders.image import preprocess_for
from capfuse.encoders.registry import build_caption, build_image
from capfuse.models.base import FoldOutput
from capfuse.nn.losses import class_frequencies
from capfuse.nn.pooling import masked_mean
from capfuse.utils.dist import init_distributed, rank_world
from capfuse.utils.isa import bf16_capped
from capfuse.utils.prefetch import prefetched


class FinetuneNet(nn.Module):
    """Encoders that produce the cached path's feature keys, then the same head/fusion net."""

    def __init__(self, cfg: dict | NetModelSettings, num_classes: int, build_head) -> None:
        super().__init__()
        settings = resolve_checked(cfg, kind="net")
        self.grid = settings.image_encoder.grid
        dims = {}
        self.backbone = None
        self.text = None
        if "image" in settings.inputs:
            enc = settings.image_encoder
            self.backbone, self.weights_source = build_image(enc.name, weights=enc.weights)
            dims["img_pooled"] = dims["img_tokens"] = self.backbone.num_features
            self.pre = preprocess_for(self.backbone, enc.size)
        if "caption" in settings.inputs:
            enc = settings.caption_encoder
            self.text, self.tokenizer, _ = build_caption(enc.name, weights=enc.weights)
            self.text.train()
            dims["cap_pooled"] = dims["cap_tokens"] = self.text.config.hidden_size
            if not enc.trainable:
                self.text.requires_grad_(False)
        self.head = build_head(dims)

    def forward(self, batch: dict) -> dict:
        feats = {}
        if self.backbone is not None:
            fmap = self.backbone.forward_features(batch["image"])  # [B, C, h, w]
            feats["img_pooled"] = fmap.mean((2, 3))
            feats["img_tokens"] = nn.functional.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        if self.text is not None:
            mask = batch["attention_mask"].bool()
            hidden = self.text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            feats.update(cap_tokens=hidden, cap_mask=mask, cap_pooled=masked_mean(hidden, mask))
        if "targets" in batch:
            feats["targets"] = batch["targets"]
        return self.head(feats)


def _depth(name: str, prefix: str, pattern: str) -> int | None:
    m = re.match(pattern, name[len(prefix) :]) if name.startswith(prefix) else None
    return int(m.group(1)) if m else None


def layerwise_groups(net: FinetuneNet, encoder_lr_mult: float, layer_decay: float) -> list[dict]:
    """Parameter groups: head at 1x; each encoder block at ``encoder_lr_mult * decay**(top - block)``."""
    groups: dict[float, list] = {}

    def add(mult: float, p: nn.Parameter) -> None:
        groups.setdefault(round(mult, 8), []).append(p)

    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            add(1.0, p)
        elif name.startswith("backbone."):
            n_blocks = len(net.backbone.blocks) if hasattr(net.backbone, "blocks") else 1
            block = _depth(name, "backbone.blocks.", r"(\d+)\.")
            if block is not None:
                level = block
            elif name.startswith(("backbone.conv_stem", "backbone.bn1")):
                level = -1  # the stem sits below block 0
            else:
                level = n_blocks  # conv_head, bn2: above the last block
            add(encoder_lr_mult * layer_decay ** (n_blocks - level), p)
        else:
            n_layers = net.text.config.num_hidden_layers
            layer = _depth(name, "text.encoder.layer.", r"(\d+)\.")
            level = -1 if "embeddings" in name else (n_layers if layer is None else layer)
            add(encoder_lr_mult * layer_decay ** (n_layers - level), p)
    return [{"params": ps, "lr_mult": mult} for mult, ps in sorted(groups.items())]


def cpu_has_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX)? Elsewhere torch emulates it,
    slower than fp32."""
    if bf16_capped(os.environ):
        return False  # an imitated AVX2 (or AVX-512 without bf16) machine trains as the real one
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of ``finetune_options.amp``: bf16 on a GPU that has it (else fp16,
    with a gradient scaler), bf16 on a CPU that computes it natively, else none (fp32)."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


def fit_fold_finetune(
    model,
    feats: dict,
    Y: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray,
    *,
    fold_dir: Path,
    pseudo=None,
    extra_rows: np.ndarray | None = None,
) -> FoldOutput:
    cfg, s = model.config, model.settings
    device = model.device
    init_distributed()
    rank, world = rank_world()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))

    torch.manual_seed(model.seed)
    net = FinetuneNet(cfg, Y.shape[1], lambda dims: model.build(dims, Y.shape[1], class_frequencies(Y[tr]))).to(device)
    ft = cfg.finetune_options
    amp_dtype = amp_dtype_for(device, ft.amp)
    # channels_last is the layout the convolutions of both CUDA and oneDNN (a CPU under bf16)
    # prefer; plain fp32 on a CPU keeps the default layout.
    channels_last = device.type == "cuda" or amp_dtype is not None
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    groups = layerwise_groups(net, ft.encoder_lr_mult, ft.layer_decay)
    train_net: nn.Module = net
    if world > 1:
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    data_dir, ids, ok = feats["data_dir"], feats["ids"], feats["image_ok"]
    size = net.pre.size if net.backbone is not None else 0
    mean = torch.tensor(net.pre.mean).view(1, 3, 1, 1) if net.backbone is not None else None
    std = torch.tensor(net.pre.std).view(1, 3, 1, 1) if net.backbone is not None else None
    tokens = None
    if net.text is not None:
        max_len = cfg.caption_encoder.max_len
        tokens = net.tokenizer(
            feats["captions"], padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
        )
    pool = ThreadPoolExecutor(max_workers=max(1, ft.loader_threads))

    def load(row: int) -> np.ndarray:
        if not ok[row]:
            return np.zeros((size, size, 3), np.uint8)  # an unreadable test image: the caption decides
        return load_array(resolve_image_path(data_dir, ids[row]), size)

    def make_batch(rows: np.ndarray, flip: np.ndarray | None) -> dict:
        batch = {}
        if net.backbone is not None:
            arr = np.stack(list(pool.map(load, rows)))
            if flip is not None and flip.any():
                arr[flip] = arr[flip][:, :, ::-1]
            x = torch.from_numpy(arr).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
            x = (x - mean.to(device)) / std.to(device)
            batch["image"] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        if tokens is not None:
            batch["input_ids"] = tokens["input_ids"][rows].to(device)
            batch["attention_mask"] = tokens["attention_mask"][rows].to(device)
        return batch

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def train_step(batch: dict, targets: dict) -> float:
        batch.update({k: v.to(device) for k, v in targets.items()})
        with autocast():
            loss = train_net(batch)["loss"] / s.accumulate
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return float(loss.detach()) * s.accumulate

    def predict(rows: np.ndarray) -> np.ndarray:
        net.eval()
        out = np.zeros((len(rows), Y.shape[1]), np.float32)
        views = (False, True) if s.tta and net.backbone is not None else (False,)
        with torch.inference_mode(), autocast():
            for flipped in views:
                starts = range(0, len(rows), s.eval_batch_size)
                chunks = [rows[i : i + s.eval_batch_size] for i in starts]
                args = [(c, np.full(len(c), flipped)) for c in chunks]
                for i, batch in zip(starts, prefetched(make_batch, args, ft.prefetch), strict=True):
                    out[i : i + s.eval_batch_size] += net(batch)["logits"].float().cpu().numpy()
        return out / len(views)

    n_train = len(Y)
    test_rows = np.arange(n_train, n_train + feats["n_test"])
    try:
        return model.loop(
            train_net,
            Y,
            tr,
            va,
            test_rows,
            fold_dir,
            predict=predict,
            make_batch=make_batch,
            train_step=train_step,
            param_groups=groups,
            scaler=scaler,
            rank=rank,
            world=world,
            pseudo=pseudo,
            extra_rows=extra_rows,
            prefetch=ft.prefetch,
        )
    finally:
        pool.shutdown()
