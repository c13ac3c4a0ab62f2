"""Training the projector and embedding images with it.

``train_projection`` fits a ``ZeroShotNet`` on rows of ``ImageFeatures`` (AdamW, cosine
schedule, a random cached view per row when ``flip``); ``embed_rows`` turns rows into unit
vectors in the caption space, averaging the cached views when ``tta``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from capfuse.zeroshot.inputs import ImageFeatures
from capfuse.zeroshot.model import ZeroShotNet
from capfuse.zeroshot.settings import ZeroShotSettings


def train_projection(
    feats: ImageFeatures,
    rows: np.ndarray,
    settings: ZeroShotSettings,
    *,
    seed: int,
    labels: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    label_text: np.ndarray | None = None,
) -> tuple[ZeroShotNet, list[dict]]:
    """Train a ``ZeroShotNet`` on ``rows`` of ``feats``; returns it (eval mode) and per-epoch logs.

    ``labels [len(rows), S]`` and ``labelled [len(rows)]`` feed the label term with the columns
    the caller passes, i.e. the seen classes only; ``label_text [S, E]`` are their prompts.
    """
    if feats.caption is None:
        raise ValueError("training needs caption vectors")
    rows = np.asarray(rows)
    if len(rows) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(rows)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lt = torch.from_numpy(np.asarray(label_text, np.float32)) if label_text is not None else None
    img_dim = next(iter(feats.pooled.values())).shape[1]
    net = ZeroShotNet(img_dim, feats.caption.shape[1], settings, lt)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    caption = np.asarray(feats.caption, np.float32)
    views = tuple(v for v in ("orig", "hflip") if v in feats.pooled) if settings.flip else ("orig",)
    use_labels = labels is not None and net.label_text is not None
    history = []
    for epoch in range(settings.epochs):
        net.train()
        order = torch.randperm(len(rows), generator=gen).numpy()
        sums: dict[str, float] = {}
        for start in range(0, len(order), settings.batch_size):
            pos = order[start : start + settings.batch_size]
            if len(pos) < 2:  # one row has no negatives to contrast with
                continue
            r = rows[pos]
            batch = feats.batch(r, rng.choice(views, size=len(r)))
            batch["caption"] = torch.from_numpy(caption[r])
            if use_labels:
                batch["labels"] = torch.from_numpy(np.asarray(labels[pos], np.float32))
                batch["labelled"] = torch.from_numpy(np.asarray(labelled[pos], bool))
            out = net(batch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
            for key in ("loss", "contrastive", "label"):
                if key in out:
                    sums[key] = sums.get(key, 0.0) + float(out[key].detach()) * len(r)
        history.append(
            {
                "epoch": epoch + 1,
                **{k: v / len(rows) for k, v in sums.items()},
                "temperature": float(1.0 / net.scale.detach()),
            }
        )
    return net.eval(), history


@torch.inference_mode()
def embed_rows(
    net: ZeroShotNet, feats: ImageFeatures, rows: np.ndarray, *, tta: bool = True, batch_size: int = 512
) -> np.ndarray:
    """Unit image embeddings ``[len(rows), E]``; with ``tta``, the mean over the cached views."""
    net.eval()
    views = [v for v in ("orig", "hflip") if v in feats.pooled] if tta else ["orig"]
    rows = np.asarray(rows)
    out = np.zeros((len(rows), net.projector.body[-1].out_features), np.float32)
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        z = sum(net(feats.batch(r, np.full(len(r), v)))["embedding"] for v in views)
        out[start : start + len(r)] = F.normalize(z, dim=-1).numpy()
    return out
