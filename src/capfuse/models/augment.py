"""Augmentation of cached training batches: crops of the cached map entering a trained top stage,
mixing of its channel statistics (MixStyle), and mixing of samples (mixup, cutmix) with their
multi-label targets.

The flip is the only augmentation the cache holds a view for; these work on the cached arrays
themselves, so no image is decoded again. They target the models that learn the training set's
instances (a trained top stage recognises the drawings it saw rather than their categories):
a crop moves and rescales the object on the map, a style mix gives it another image's colours
and textures, a mix shows two samples' evidence at once.

Draws are made from a generator seeded by the model's seed and the batch's rows, in their
order: the loop's order of an epoch is a function of (seed, epoch), so the draws are as well,
and an epoch resumed from its checkpoint draws the same crops and partners. Nothing here reads
torch's global generator, so dropout draws what it drew before. With every key off a batch is
returned untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

MIX_KEY = "mix"  # the batch entry that carries (partner, share kept) from the batch to its targets
_SALT = 0x6A7567  # keeps these draws apart from any other generator seeded by (seed, ...)
MAP_KEY = "img_mid"  # the cached map a trained top stage reads


@dataclass(frozen=True)
class Augment:
    """What a fold's training batches go through (``train.crop_p``, ``crop_scale``, ``mix``,
    ``mix_p``, ``mix_alpha``) and the model's seed."""

    seed: int
    crop_p: float = 0.0
    crop_scale: float = 0.6
    mix: str = "none"
    mix_p: float = 0.5
    mix_alpha: float = 0.4
    style_p: float = 0.0
    style_alpha: float = 0.1

    @classmethod
    def from_settings(cls, settings, seed: int) -> Augment:
        """From a ``TrainSettings`` (the ``train:`` block)."""
        s = settings
        return cls(int(seed), s.crop_p, s.crop_scale, s.mix, s.mix_p, s.mix_alpha, s.style_p, s.style_alpha)

    @property
    def active(self) -> bool:
        return self.crop_p > 0 or self.style_p > 0 or (self.mix != "none" and self.mix_p > 0)

    def __call__(self, batch: dict[str, torch.Tensor], rows: np.ndarray) -> dict[str, torch.Tensor]:
        """``batch`` (from ``CachedViews.batch``) augmented; ``rows`` are its feature rows in order."""
        if not self.active:
            return batch
        rng = np.random.default_rng([self.seed, _SALT, *np.asarray(rows, np.int64).tolist()])
        if self.crop_p > 0 and MAP_KEY in batch:
            batch[MAP_KEY] = crop_maps(batch[MAP_KEY], rng, self.crop_p, self.crop_scale)
        if self.style_p > 0 and MAP_KEY in batch:
            batch[MAP_KEY] = mix_styles(batch[MAP_KEY], rng, self.style_p, self.style_alpha)
        if self.mix != "none" and self.mix_p > 0:
            batch = mix_inputs(batch, rng, self.mix, self.mix_p, self.mix_alpha)
        return batch


def check_augmentation(config) -> None:
    """Refuse what a model cannot augment (``config``: its ``NetModelSettings``).

    Crops and cutmix's boxes work on the cached map entering trained top stages; a fine-tuned
    model decodes its images and has no cached batch to augment. Checked on the whole model, not
    in the ``train:`` block: an ablation row's ``set`` is checked alone, without its base's encoder.
    """
    t, name = config.train, config.name or "this model"
    needs_map = [
        key for key, on in (("crop_p", t.crop_p > 0), ("mix", t.mix == "cutmix"), ("style_p", t.style_p > 0)) if on
    ]
    if needs_map and (config.finetune or not config.image_encoder.train_blocks):
        key = needs_map[0]
        raise ValueError(
            f"{name}: train.{key} = {getattr(t, key)!r}: works on the cached map of a trained top stage: "
            "needs image_encoder.train_blocks >= 1 and finetune: false"
        )
    if config.finetune and t.mix != "none":
        raise ValueError(f"{name}: train.mix = {t.mix!r}: mixes cached batches: needs finetune: false")


def crop_maps(maps: torch.Tensor, rng: np.random.Generator, p: float, min_scale: float) -> torch.Tensor:
    """A random square sub-window of each chosen map (side a share in [``min_scale``, 1] of the
    map's, anywhere inside it), resized back to the map's size by bilinear sampling.

    The window is a zoom on the map's own cells, no padding: a crop never shows the model a
    border it would not meet on a test image.
    """
    n = len(maps)
    chosen = rng.random(n) < p
    scale = rng.uniform(min_scale, 1.0, n)
    # The window's centre, in [-1, 1] map coordinates, as far off-centre as keeps it inside.
    cx, cy = (rng.uniform(-1.0, 1.0, n) * (1.0 - scale) for _ in range(2))
    if not chosen.any():
        return maps
    idx = np.flatnonzero(chosen)
    theta = torch.zeros(len(idx), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = torch.from_numpy(scale[idx]).float()
    theta[:, 0, 2] = torch.from_numpy(cx[idx]).float()
    theta[:, 1, 2] = torch.from_numpy(cy[idx]).float()
    picked = maps[idx]
    grid = F.affine_grid(theta, list(picked.shape), align_corners=False)
    out = maps.clone()
    out[idx] = F.grid_sample(picked, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out


def mix_styles(maps: torch.Tensor, rng: np.random.Generator, p: float, alpha: float) -> torch.Tensor:
    """MixStyle: with chance ``p`` the whole batch, each map's channel statistics (mean and
    standard deviation over its cells) replaced by a mix of its own and a partner's, the mix's
    share drawn per sample from Beta(``alpha``, ``alpha``); the normalised map, which carries
    where things are, stays the sample's. The partner comes from a random permutation of the
    batch, as the method does where the training rows carry no domain label (a sample drawn as
    its own partner keeps its style)."""
    n = len(maps)
    # Drawn whether or not the batch mixes, so the draws after these (mixing) do not depend on it.
    use = rng.random() < p
    partner = rng.permutation(n)
    lam = rng.beta(alpha, alpha, n)
    if not use or n < 2:
        return maps
    mu = maps.mean(dim=(2, 3), keepdim=True)
    sig = (maps.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt()
    share = torch.from_numpy(lam).float().view(-1, 1, 1, 1)
    idx = torch.from_numpy(partner)
    mu_mix = share * mu + (1.0 - share) * mu[idx]
    sig_mix = share * sig + (1.0 - share) * sig[idx]
    return (maps - mu) / sig * sig_mix + mu_mix


def mix_inputs(
    batch: dict[str, torch.Tensor], rng: np.random.Generator, kind: str, p: float, alpha: float
) -> dict[str, torch.Tensor]:
    """Each chosen sample mixed with a partner from the same batch; the share each keeps of itself
    goes into the batch under ``MIX_KEY`` for ``mix_targets``.

    ``mixup``: every input is ``lam * own + (1 - lam) * partner``. ``cutmix``: a box of the
    partner's cached map is pasted onto the sample's (``lam`` is then the share of the map left
    uncovered); the other inputs (the caption's vectors) mix by that same share, so that what
    the inputs show and what the targets say agree. ``lam`` is drawn from Beta(alpha, alpha) and
    folded above one half: a sample stays mostly itself.
    """
    n = len(next(iter(batch.values())))
    partner = rng.permutation(n)
    lam = rng.beta(alpha, alpha, n)
    lam = np.maximum(lam, 1.0 - lam)
    lam[rng.random(n) >= p] = 1.0
    out = dict(batch)
    if kind == "cutmix" and MAP_KEY in batch:
        out[MAP_KEY], lam = _paste_boxes(batch[MAP_KEY], partner, lam, rng)
    share = torch.from_numpy(lam).float()
    for key, value in batch.items():
        if key == "cap_mask":  # a token either sample has is a token the mixed caption has
            out[key] = value | value[partner]
        elif kind == "cutmix" and key == MAP_KEY:
            continue
        elif value.is_floating_point():
            kept = share.view(-1, *([1] * (value.dim() - 1)))
            out[key] = kept * value + (1.0 - kept) * value[partner]
    out[MIX_KEY] = (torch.from_numpy(partner), share)
    return out


def _paste_boxes(
    maps: torch.Tensor, partner: np.ndarray, lam: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Cutmix on cached maps: a box of ``1 - lam`` of the area from the partner's map; returns the
    maps and the share each sample keeps, counted in whole cells."""
    n, _, h, w = maps.shape
    side = np.sqrt(1.0 - lam)
    # Whole cells, rounded down: a sample never keeps less of its own map than its drawn share.
    bh, bw = np.floor(side * h).astype(int), np.floor(side * w).astype(int)
    top = (rng.random(n) * (h - bh + 1)).astype(int)
    left = (rng.random(n) * (w - bw + 1)).astype(int)
    out = maps.clone()
    for i in np.flatnonzero((bh > 0) & (bw > 0)):
        j = partner[i]
        out[i, :, top[i] : top[i] + bh[i], left[i] : left[i] + bw[i]] = maps[
            j, :, top[i] : top[i] + bh[i], left[i] : left[i] + bw[i]
        ]
    kept = 1.0 - (bh * bw) / float(h * w)
    return out, np.where(partner == np.arange(n), 1.0, kept)


def mix_targets(targets: dict[str, torch.Tensor], mix: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """The targets of a mixed batch (``mix``: the batch's ``MIX_KEY`` entry; None: unmixed).

    Multi-label: every class on its own, ``lam * own + (1 - lam) * partner``, so a class both
    samples hold stays 1, one neither holds stays 0, and one of them only is a soft target that
    BCE and the asymmetric loss take as it is (no softmax, no renormalising over classes). A
    pseudo-labelled entry counts only where both samples' entries count; a sample's weight mixes
    like its targets.
    """
    if mix is None:
        return targets
    partner, share = mix
    kept = share.view(-1, 1)
    out = dict(targets)
    y = targets["targets"]
    out["targets"] = kept * y + (1.0 - kept) * y[partner]
    if "target_mask" in targets:
        out["target_mask"] = targets["target_mask"] * targets["target_mask"][partner]
    if "sample_weight" in targets:
        w = targets["sample_weight"]
        out["sample_weight"] = share * w + (1.0 - share) * w[partner]
    return out
