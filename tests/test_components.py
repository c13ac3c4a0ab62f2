"""Label-query alignment's parts (label-query head, semantic alignment, context task) and their wiring.

Each part is a config switch: it runs forward and backward, its parameters get gradients,
switching it on changes the output, the context map reads only a fold's training rows, and
the alignment loss has its minimum where each label feature is its own label's text.
"""

import json
import math

import numpy as np
import pytest
import torch

from capfuse.models.net import NetModel
from capfuse.nn.contexts import cluster_contexts, context_membership, context_targets
from capfuse.nn.fusion import build_net, count_parameters
from capfuse.nn.losses import LOSSES, alignment_loss

B, T, L, C, D_TEXT = 6, 16, 8, 6, 10
DIMS = {"img_pooled": 24, "img_tokens": 20, "cap_pooled": 12, "cap_tokens": 12}
CONTEXT_MAP = np.array([0, 0, 1, 1, 2, 2])


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, 5:] = False
    targets = (torch.rand(B, C, generator=g) < 0.4).float()
    targets[:, 0] = 1.0  # every sample has a positive: the alignment loss has entries
    return {
        "img_pooled": torch.randn(B, DIMS["img_pooled"], generator=g),
        "img_tokens": torch.randn(B, T, DIMS["img_tokens"], generator=g),
        "cap_pooled": torch.randn(B, DIMS["cap_pooled"], generator=g),
        "cap_tokens": torch.randn(B, L, DIMS["cap_tokens"], generator=g),
        "cap_mask": mask,
        "targets": targets,
    }


def class_text() -> torch.Tensor:
    return torch.randn(C, D_TEXT, generator=torch.Generator().manual_seed(7))


def net_of(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    full = {"inputs": ["image", "caption"], **cfg}
    full["fusion"] = {"d_model": 16, "heads": 2, "dropout": 0.0, **cfg.get("fusion", {})}
    for key in ("image_head", "caption_head"):
        full[key] = {"hidden": 16, "dropout": 0.0, **cfg.get(key, {})}
    net = build_net(full, DIMS, C, class_text=class_text(), context_map=CONTEXT_MAP)
    net.loss_fn = LOSSES.create("bce")
    return net


LQ = {"d_model": 16, "heads": 2, "dropout": 0.0}
VARIANTS = {
    "lq_branch": {"fusion": {"label_query": LQ}},
    "lq_branch_captions": {"fusion": {"label_query": {**LQ, "caption_tokens": True}}},
    "lq_branch_own_projection": {"fusion": {"label_query": {**LQ, "caption_tokens": True, "share_projection": False}}},
    "lq_only": {"fusion": {"logit_fusion": False, "label_query": LQ}},
    "lq_only_image": {"inputs": ["image"], "fusion": {"label_query": {**LQ, "learn_temperature": False}}},
    "lq_align_all": {"fusion": {"label_query": LQ}, "aux": {"align_on": "all"}},
    "context": {"aux": {"context_weight": 0.5, "n_contexts": 3}},
    "context_early": {
        "fusion": {"logit_fusion": False, "cross_attention": False},
        "aux": {"context_weight": 0.5, "n_contexts": 3},
    },
    "lq_context": {
        "fusion": {"label_query": {**LQ, "caption_tokens": True}},
        "aux": {"context_weight": 0.5, "n_contexts": 3},
    },
}


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_forward_backward(name):
    net = net_of(VARIANTS[name])
    out = net(batch())
    assert out["logits"].shape == (B, C) and torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if pname.startswith(("label_query.", "context_head.")):
            assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"
    if net.label_query is not None:
        assert out["align_scores"].shape == (B, C) and "align" in out["aux_losses"]
        assert (out["align_scores"].abs() <= 1 + 1e-5).all()
    if net.context_head is not None:
        assert out["context_logits"].shape == (B, 3) and "context" in out["aux_losses"]


def test_label_query_on_changes_the_logits():
    b = batch()
    with torch.no_grad():
        off = net_of({}).eval()(b)["logits"]
        on = net_of({"fusion": {"label_query": LQ}}).eval()(b)["logits"]
        alone = net_of({"fusion": {"logit_fusion": False, "label_query": LQ}}).eval()(b)["logits"]
    assert not torch.allclose(on, off) and not torch.allclose(alone, off)


def test_label_query_logits_are_tempered_cosines_of_their_own_text():
    net = net_of({"fusion": {"logit_fusion": False, "label_query": {**LQ, "temperature": 0.2}}}).eval()
    with torch.no_grad():
        out = net(batch())
        lq = net.label_query
        assert torch.allclose(lq.scale, torch.tensor(5.0))
        assert torch.allclose(out["logits"], 5.0 * out["align_scores"] + lq.bias, atol=1e-5)
        # the alignment score is the cosine to the class's own text, recomputed by hand
        z = lq(batch()["img_tokens"])["text_features"]
        own = torch.nn.functional.normalize(class_text(), dim=1)
        assert torch.allclose(out["align_scores"], (z * own).sum(-1), atol=1e-5)


def test_label_queries_start_at_their_class_prompts():
    net = net_of({"fusion": {"label_query": LQ}})
    lq = net.label_query
    queries = lq.query_proj(lq.class_text) + lq.query_offset
    assert torch.allclose(queries, lq.query_proj(torch.nn.functional.normalize(class_text(), dim=1)))
    # a different prompt set gives different queries: they come from the text, not from noise
    other = lq.query_proj(torch.nn.functional.normalize(class_text().flip(0), dim=1))
    assert not torch.allclose(queries, other)


def test_caption_padding_is_ignored_by_the_label_queries():
    net = net_of({"fusion": {"logit_fusion": False, "label_query": {**LQ, "caption_tokens": True}}}).eval()
    b = batch()
    b2 = dict(b, cap_tokens=b["cap_tokens"].clone())
    b2["cap_tokens"][:, 5:] = 100.0
    with torch.no_grad():
        assert torch.allclose(net(b)["logits"], net(b2)["logits"], atol=1e-5)
        b3 = dict(b, cap_tokens=b["cap_tokens"].flip(0))  # real tokens do matter
        assert not torch.allclose(net(b)["logits"], net(b3)["logits"], atol=1e-4)


def simplex_texts() -> torch.Tensor:
    """Three unit texts 120 degrees apart: by symmetry, the best feature for label c is text c."""
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_alignment_loss_is_minimal_when_each_label_feature_is_its_own_text():
    tau = 0.5
    texts = simplex_texts()
    own = texts.unsqueeze(0)  # one sample, label c's feature = text c
    weight = torch.ones(1, 3)
    best = alignment_loss(own, texts, weight, tau)
    # by hand: cos 1 to its own text, -1/2 to the two others
    expected = -1 / tau + math.log(math.exp(1 / tau) + 2 * math.exp(-0.5 / tau))
    assert math.isclose(float(best), expected, rel_tol=1e-5)
    # any rotation of the features, and swapping labels' features, costs more
    for angle in np.linspace(-1.0, 1.0, 21):
        if abs(angle) < 1e-9:
            continue
        rot = torch.tensor(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float32
        )
        assert float(alignment_loss(own @ rot.T, texts, weight, tau)) > float(best)
    assert float(alignment_loss(own[:, [1, 2, 0]], texts, weight, tau)) > float(best) + 1.0
    # and it is a stationary point: no gradient along the unit circle
    z = own.clone().requires_grad_(True)
    alignment_loss(z, texts, weight, tau).backward()
    tangent = torch.stack([-texts[:, 1], texts[:, 0]], dim=1)
    assert (z.grad[0] * tangent).sum(1).abs().max() < 1e-6


def test_alignment_loss_counts_only_the_weighted_entries():
    texts = simplex_texts()
    feats = torch.randn(2, 3, 2)
    weight = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    moved = feats.clone()
    moved[weight == 0] = torch.randn(int((weight == 0).sum()), 2)
    assert torch.allclose(alignment_loss(feats, texts, weight), alignment_loss(moved, texts, weight))
    assert float(alignment_loss(feats, texts, torch.zeros(2, 3))) == 0.0


def test_alignment_on_positives_ignores_the_features_of_absent_labels():
    net = net_of({"fusion": {"logit_fusion": False, "label_query": LQ}}).eval()
    b = batch()
    with torch.no_grad():
        out = net(b)
        # the positives-only alignment, recomputed from the head's own features
        feats = net.label_query(b["img_tokens"])["text_features"]
        by_hand = alignment_loss(feats, net.label_query.class_text, b["targets"], net.aux.align_temperature)
    assert torch.allclose(out["aux_losses"]["align"], by_hand, atol=1e-5)


def test_align_weight_is_added_to_the_loss():
    b = batch()
    with torch.no_grad():
        base = net_of({"fusion": {"label_query": LQ}, "aux": {"align_weight": 0.0}}).eval()(b)
        weighted = net_of({"fusion": {"label_query": LQ}, "aux": {"align_weight": 0.3}}).eval()(b)
    assert "align" not in base["aux_losses"]
    assert torch.allclose(weighted["loss"], base["loss"] + 0.3 * weighted["aux_losses"]["align"], atol=1e-5)


def test_context_task_changes_the_loss_and_then_the_logits():
    b = batch()
    off, on = net_of({}), net_of({"aux": {"context_weight": 0.5, "n_contexts": 3}})
    missing = on.load_state_dict(off.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("context_head.", "context_members")) for k in missing)
    with torch.no_grad():
        a, c = off.eval()(b), on.eval()(b)
    assert torch.allclose(a["logits"], c["logits"])  # same weights: the head only adds a loss
    assert torch.allclose(c["loss"], a["loss"] + 0.5 * c["aux_losses"]["context"], atol=1e-6)
    for net in (off, on):  # one identical step each: the context loss moves the shared layers
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        net(b)["loss"].backward()
        opt.step()
    with torch.no_grad():
        assert not torch.allclose(off.eval()(b)["logits"], on.eval()(b)["logits"])


def test_context_targets_any_class_present_and_partial_masks():
    members = context_membership(np.array([0, 0, 1, 1, 2]), 3)
    y = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    ctx, mask = context_targets(y, members)
    assert ctx.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]] and (mask == 1).all()
    # partial labels: a masked class could be the present one, so its context is unknown unless
    # a counted class already makes it present; a masked positive is not evidence
    m = torch.tensor([[1.0, 1, 0, 1, 1], [1, 1, 1, 0, 1], [0, 1, 1, 1, 1]])
    ctx, mask = context_targets(y, members, m)
    assert ctx.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert mask.tolist() == [[1, 0, 1], [1, 0, 1], [0, 1, 1]]


def planted(n: int = 400, seed: int = 0) -> np.ndarray:
    """Three scenes of two classes each: a scene brings both its classes, rarely one of another scene."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, C), np.uint8)
    scene = rng.integers(0, 3, n)
    for i, s in enumerate(scene):
        Y[i, 2 * s : 2 * s + 2] = rng.random(2) < 0.8
        if rng.random() < 0.05:
            Y[i, rng.integers(0, C)] = 1
    return Y


def test_spectral_contexts_recover_planted_scenes():
    cmap = cluster_contexts(planted(), 3, seed=0)
    assert cmap.tolist() == [0, 0, 1, 1, 2, 2]  # numbered by first class, so the grouping reads the same
    with pytest.raises(ValueError, match="n_contexts"):
        cluster_contexts(planted(), C, seed=0)


# -- through NetModel: what the trainer builds ---------------------------------------------


def synthetic(n: int = 160, n_test: int = 20, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    Y = planted(n, seed)
    Y[Y.sum(1) == 0, 0] = 1
    Yall = np.concatenate([Y, planted(n_test, seed + 1)])
    W_img, W_cap = rng.normal(size=(C, 16)), rng.normal(size=(C, 12))
    img_tokens = (Yall @ W_img)[:, None, :] + rng.normal(scale=0.8, size=(len(Yall), 4, 16))
    cap_tokens = (Yall @ W_cap)[:, None, :] + rng.normal(scale=0.8, size=(len(Yall), 6, 12))
    orig = {
        "img_tokens": img_tokens.astype(np.float16),
        "img_pooled": img_tokens.mean(1).astype(np.float16),
        "cap_tokens": cap_tokens.astype(np.float16),
        "cap_pooled": cap_tokens.mean(1).astype(np.float16),
        "cap_mask": np.ones((len(Yall), 6), np.uint8),
    }
    feats = {
        "views": {"orig": orig, "hflip": orig},
        "n_test": n_test,
        "dims": {"img_pooled": 16, "img_tokens": 16, "cap_pooled": 12, "cap_tokens": 12},
        "class_ids": [1, 2, 3, 5, 8, 9],
        "class_names": ["person", "bicycle", "car", "bus", "dog", "horse"],
    }
    return feats, Y


def model_config(**extra) -> dict:
    return {
        "kind": "net",
        "inputs": ["image", "caption"],
        "image_head": {"hidden": 16},
        "caption_head": {"hidden": 16},
        "fusion": {"d_model": 16, "heads": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3},
        **extra,
    }


def test_context_map_reads_only_the_training_rows(tmp_path):
    feats, Y = synthetic()
    tr, va = np.arange(120), np.arange(120, 160)
    cfg = model_config(aux={"context_weight": 0.3, "n_contexts": 3})
    NetModel(cfg, seed=0).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "a")
    first = json.loads((tmp_path / "a" / "contexts.json").read_text())
    assert first["train_rows"] == 120 and sorted(first["class_context"]) == ["1", "2", "3", "5", "8", "9"]
    assert [[c["name"] for c in ctx] for ctx in first["contexts"]] == [
        ["person", "bicycle"],
        ["car", "bus"],
        ["dog", "horse"],
    ]
    # held-out labels scrambled (all classes together): the map must not move
    Y2 = Y.copy()
    Y2[va] = 1
    NetModel(cfg, seed=0).fit_fold(feats, Y2, tr, va, fold_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "contexts.json").read_text())["class_context"] == first["class_context"]
    # while training labels that pair the classes otherwise do move it
    Y3 = Y.copy()
    Y3[tr] = Y[tr][:, [0, 2, 1, 3, 4, 5]]
    NetModel(cfg, seed=0).fit_fold(feats, Y3, tr, va, fold_dir=tmp_path / "c")
    assert list(json.loads((tmp_path / "c" / "contexts.json").read_text())["class_context"].values()) == [
        0,
        1,
        0,
        1,
        2,
        2,
    ]


def test_label_query_model_embeds_the_class_names_once(tmp_path):
    """The real prompt embeddings (MiniLM, offline package), computed at build time and reused."""
    feats, Y = synthetic()
    tr, va = np.arange(120), np.arange(120, 160)
    model = NetModel(
        model_config(
            fusion={"d_model": 16, "heads": 2, "label_query": {"d_model": 16, "heads": 2}},
            aux={"context_weight": 0.3, "n_contexts": 3},
        ),
        seed=0,
    )
    out = model.fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "f")
    assert out.val_logits.shape == (40, C) and np.isfinite(out.val_logits).all()
    text = model._class_text
    assert text.shape == (C, 384)
    norm = text / np.linalg.norm(text, axis=1, keepdims=True)
    sim = norm @ norm.T
    assert sim[0, 1] < 0.99 and sim[3, 2] > sim[3, 4]  # "a photo of a bus" is nearer a car than a dog
    model.prepare(feats, Y[tr])
    assert model._class_text is text  # one encoder pass per model, not per fold or batch
    params, ms = model.head_cost(feats, C)
    plain = NetModel(model_config(), seed=0)
    plain.prepare(feats, Y[tr])
    assert params > plain.head_cost(feats, C)[0] and ms > 0


def test_label_query_needs_class_names():
    feats, Y = synthetic()
    del feats["class_names"]
    model = NetModel(model_config(fusion={"label_query": True}), seed=0)
    with pytest.raises(ValueError, match="class names"):
        model.prepare(feats, Y)


def test_bad_component_settings_are_named():
    with pytest.raises(ValueError, match=r"fusion\.label_query\.queries"):
        net_of({"fusion": {"label_query": {"queries": 3}}})
    with pytest.raises(ValueError, match=r"aux\.contexts"):
        net_of({"aux": {"contexts": 3}})
    with pytest.raises(ValueError, match="inputs must include image"):
        net_of({"inputs": ["caption"], "fusion": {"label_query": True}})
    with pytest.raises(ValueError, match="context_map"):
        build_net({"aux": {"context_weight": 0.2}}, DIMS, C)
    assert count_parameters(net_of({"fusion": {"label_query": LQ}})) > count_parameters(net_of({}))


def test_label_queries_share_the_cross_attention_projection():
    shared = net_of({"fusion": {"label_query": {**LQ, "caption_tokens": True}}})
    own = net_of({"fusion": {"label_query": {**LQ, "caption_tokens": True, "share_projection": False}}})
    assert shared.lq_shared and not own.lq_shared
    assert count_parameters(own) - count_parameters(shared) == (
        count_parameters(own.label_query.img_proj) + count_parameters(own.label_query.cap_proj)
    )
    # the alignment loss alone reaches the shared projection
    shared.aux_weight = 0.0
    out = shared(batch())
    out["aux_losses"]["align"].backward()
    assert shared.xattn.img_proj[1].weight.grad.abs().sum() > 0
    assert shared.xattn.cap_proj[1].weight.grad.abs().sum() > 0
