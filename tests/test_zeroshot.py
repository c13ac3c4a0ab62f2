"""Open vocabulary (MKT-style): the projector's parts, the loss, the metrics, and the stage's guarantees."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import capfuse.encoders.text as text_encoders
from capfuse.cli import main
from capfuse.data.demo import make_demo
from capfuse.encoders.text import label_text_embeddings
from capfuse.zeroshot.evaluate import pick_unseen, random_metrics, zeroshot_metrics
from capfuse.zeroshot.inputs import ImageFeatures
from capfuse.zeroshot.model import ZeroShotNet, clip_loss
from capfuse.zeroshot.settings import ZeroShotSettings
from capfuse.zeroshot.train import embed_rows, train_projection

REPO = Path(__file__).resolve().parents[1]

# Each component of the zeroshot config, switched on alone over a small base.
COMPONENTS = {
    "linear": dict(kind="linear", tokens=False, label_weight=0.0),
    "mlp": dict(kind="mlp", tokens=False, label_weight=0.0),
    "tokens": dict(kind="mlp", tokens=True, label_weight=0.0),
    "label_term": dict(kind="mlp", tokens=False, label_weight=0.5),
    "fixed_temperature": dict(kind="mlp", tokens=False, label_weight=0.0, learn_temperature=False),
    "all": dict(kind="mlp", tokens=True, label_weight=0.5),
}


def _batch(seed: int = 0, b: int = 8, d: int = 24, t: int = 4, e: int = 16, s: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "img_pooled": torch.rand(b, d, generator=g),
        "img_tokens": torch.rand(b, t, d, generator=g),
        "caption": torch.randn(b, e, generator=g),
        "labels": (torch.rand(b, s, generator=g) > 0.5).float(),
        "labelled": torch.tensor([True] * (b - 2) + [False] * 2),
    }


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_forward_backward_and_a_step_changes_the_output(name):
    torch.manual_seed(0)
    settings = ZeroShotSettings(hidden=32, dropout=0.0, **COMPONENTS[name])
    net = ZeroShotNet(24, 16, settings, label_text=torch.randn(3, 16))
    batch = _batch()
    out = net(batch)
    assert out["embedding"].shape == (8, 16)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads.keys()
    assert grads["projector.body.1.weight"].abs().sum() > 0
    if settings.tokens:
        assert grads["projector.local.query"].abs().sum() > 0
    if settings.label_weight > 0:
        assert "label" in out and grads["label_scale"].abs() > 0
    else:
        assert "label" not in out and not hasattr(net, "label_scale")
    assert (grads["log_scale"].abs() > 0) if settings.learn_temperature else ("log_scale" not in grads)

    before = net(batch)["embedding"].detach().clone()
    torch.optim.Adam(net.parameters(), lr=1e-2).step()
    assert not torch.allclose(net(batch)["embedding"], before)


def test_local_stream_reads_the_tokens():
    torch.manual_seed(0)
    batch = _batch()
    other = dict(batch, img_tokens=batch["img_tokens"].flip(0))
    for tokens, should_change in ((True, True), (False, False)):
        net = ZeroShotNet(24, 16, ZeroShotSettings(hidden=32, tokens=tokens)).eval()
        changed = not torch.allclose(net(batch)["embedding"], net(other)["embedding"])
        assert changed == should_change


def test_clip_loss_by_hand():
    # Two images, two captions, scale 10: logits = 10 * image @ text.T = [[10, -10], [0, 0]].
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    e = math.exp
    rows = (math.log(e(10) + e(-10)) - 10) + math.log(2)  # image 0 picks caption 0; image 1 sees a tie
    cols = (math.log(e(10) + e(0)) - 10) + math.log(e(-10) + e(0))  # caption 0 -> image 0; caption 1 -> image 1
    expected = 0.5 * (rows / 2 + cols / 2)
    assert clip_loss(image, text, torch.tensor(10.0)).item() == pytest.approx(expected, rel=1e-5)
    z = torch.eye(3)
    assert clip_loss(z, z, torch.tensor(50.0)).item() < 1e-6  # matched pairs
    assert clip_loss(z, z[[1, 2, 0]], torch.tensor(50.0)).item() > 10  # every pair swapped


def test_settings_from_config_and_errors():
    cfg = yaml.safe_load((REPO / "configs" / "zeroshot.yaml").read_text()) or {}  # every value a default
    s = ZeroShotSettings.from_config(cfg)
    assert s.kind == "linear" and not s.tokens and s.label_weight == 0.5 and len(s.prompts) == 4
    with pytest.raises(ValueError, match="unknown zeroshot keys"):
        ZeroShotSettings.from_config({"zeroshot": {"projector": {"knd": "mlp"}}})
    with pytest.raises(ValueError, match="kind"):
        ZeroShotSettings.from_config({"zeroshot": {"projector": {"kind": "conv"}}})
    with pytest.raises(ValueError, match="name"):
        ZeroShotSettings.from_config({"zeroshot": {"prompts": ["a photo"]}})


def test_pick_unseen():
    Y = np.zeros((100, 5), np.uint8)
    Y[:, 0] = 1
    Y[:30, 1] = Y[:25, 2] = Y[:5, 3] = Y[:40, 4] = 1
    names = ["person", "cat", "dog", "rare", "car"]
    drawn = pick_unseen(Y, names, 2, min_positives=20, seed=0)
    assert drawn == pick_unseen(Y, names, 2, min_positives=20, seed=0)  # seeded
    assert len(drawn) == 2 and 3 not in drawn  # too few positives to be drawn
    assert pick_unseen(Y, names, ["dog", "cat"], min_positives=20, seed=0) == [1, 2]
    with pytest.raises(ValueError, match="not a class name"):
        pick_unseen(Y, names, ["horse"], min_positives=20, seed=0)
    with pytest.raises(ValueError, match="N <="):
        pick_unseen(Y, names, 5, min_positives=20, seed=0)


def test_zeroshot_metrics_protocol():
    Y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 1]])
    unseen = [2, 3]
    perfect = Y + 0.1 * np.arange(4)  # positives above negatives in every row and column
    m = zeroshot_metrics(Y, perfect, unseen)
    # ZSL: only images carrying an unseen label (rows 0, 2, 3), only the unseen columns.
    assert m["zsl"]["n_images"] == 3 and m["zsl"]["n_classes"] == 2
    assert m["gzsl"]["n_images"] == 4 and m["gzsl"]["n_classes"] == 4
    assert m["zsl"]["map"] == 1.0 and m["gzsl"]["map"] == 1.0
    assert math.isnan(m["zsl"]["f1@3"]) and math.isnan(m["zsl"]["f1@5"])  # k beyond the 2 classes ranked
    assert m["gzsl"]["f1@3"] == pytest.approx(2 * (6 / 12) * 1.0 / (6 / 12 + 1.0))
    worst = zeroshot_metrics(Y, -perfect, unseen)
    assert worst["zsl"]["map"] < 1.0
    rnd = random_metrics(Y, unseen, seeds=5, seed=0)
    assert set(rnd) == {"zsl", "gzsl"} and 0 < rnd["gzsl"]["map"] < 1


def _synthetic(n: int = 600, classes: int = 8, e: int = 32, d: int = 48, seed: int = 0):
    """Captions are sums of their labels' text vectors; images a fixed random map of them plus noise."""
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((classes, e))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    Y = np.zeros((n, classes), np.uint8)
    for i in range(n):
        Y[i, rng.choice(classes, size=rng.integers(1, 4), replace=False)] = 1
    latent = Y @ text + 0.3 * rng.standard_normal((n, e))
    caption = (latent / np.linalg.norm(latent, axis=1, keepdims=True)).astype(np.float32)
    A = rng.standard_normal((e, d))
    views = {v: (latent @ A + 0.5 * rng.standard_normal((n, d))).astype(np.float16) for v in ("orig", "hflip")}
    return ImageFeatures(pooled=views, caption=caption), Y, text.astype(np.float32)


def test_unseen_classes_scored_well_above_random_on_a_synthetic_problem():
    feats, Y, text = _synthetic()
    unseen = [0, 1]
    seen = [c for c in range(Y.shape[1]) if c not in unseen]
    tr, ev = np.arange(400), np.arange(400, 600)
    settings = ZeroShotSettings(tokens=False, hidden=64, dropout=0.0, epochs=15, batch_size=64, lr=3e-3)
    net, history = train_projection(
        feats, tr, settings, seed=0, labels=Y[np.ix_(tr, seen)], labelled=np.ones(len(tr), bool), label_text=text[seen]
    )
    assert history[-1]["contrastive"] < history[0]["contrastive"]
    emb = embed_rows(net, feats, ev)
    model = zeroshot_metrics(Y[ev], emb @ text.T, unseen)
    rnd = random_metrics(Y[ev], unseen, seeds=10, seed=0)
    for setting in ("zsl", "gzsl"):
        assert model[setting]["map"] > rnd[setting]["map"] + 0.2, (model, rnd)


def test_prompt_embeddings_average_the_templates(monkeypatch):
    calls = []

    def fake_encode(model, tokenizer, texts, max_len):
        calls.append(list(texts))
        start = sum(map(len, calls[:-1]))
        pooled = np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts], np.float32)
        return None, None, pooled * np.arange(start + 1, start + len(texts) + 1, dtype=np.float32)[:, None]

    monkeypatch.setattr(text_encoders, "encode", fake_encode)
    out = label_text_embeddings(
        ["cat", "red_bus"], None, None, prompts=("a {name}.", "{name}"), batch_size=3, unit=True
    )
    assert calls == [["a cat.", "cat", "a red bus."], ["red bus"]]  # underscores read as spaces; batches of 3
    np.testing.assert_allclose(out, [[1, 0], [0, 1]], atol=1e-6)
    # The default: the one CLIP prompt, the raw pooled vector, every name in one batch.
    calls.clear()
    raw = label_text_embeddings(["cat", "red_bus"], None, None)
    assert calls == [["a photo of a cat.", "a photo of a red bus."]]
    np.testing.assert_array_equal(raw, [[1, 0], [0, 2]])


# -- the stage: unseen labels never reach training; the CSV; the up-to-date check ---------------

ZS_CONFIG = {
    "seed": 3,
    "folds": {"k": 2, "seed": 3},
    "zeroshot": {
        "image_encoder": {"name": "tf_efficientnet_lite0", "size": 64, "grid": 2},
        "caption_encoder": {"name": "minilm", "max_len": 16},
        "unseen": ["cat", "dog", "bird"],
        "projector": {"hidden": 16, "tokens": True},
        "train": {"epochs": 2, "batch_size": 16},
        "eval": {"random_seeds": 2},
    },
}
CAT, PERSON = 17, 1


def _toggle(src: Path, dst: Path, class_id: int) -> None:
    """A copy of a dataset whose train labels differ only in ``class_id``, toggled on every row
    that keeps another label; images are copied with their mtimes so the feature cache still fits."""
    shutil.copytree(src, dst)
    lines = (src / "train.csv").read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        image, labels, caption = line.split(",", 2)
        ids = set(map(int, labels.split()))
        if ids - {class_id}:
            ids ^= {class_id}
        out.append(f"{image},{' '.join(map(str, sorted(ids)))},{caption}")
    (dst / "train.csv").write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshot")
    config = root / "zs.yaml"
    config.write_text(yaml.safe_dump(ZS_CONFIG))
    data = root / "data" / "zsa"
    make_demo(data, n_train=60, n_test=16, size=64, seed=5)
    for name, class_id in (("zsb", CAT), ("zsc", PERSON)):
        _toggle(data, root / "data" / name, class_id)
    assert main(["folds", "--data", str(data), "--root", str(root), "--config", str(config), "--quiet"]) == 0
    return root, data, config


def _run(root, data, config, *extra):
    return main(["zeroshot", "--data", str(data), "--root", str(root), "--config", str(config), "--quiet", *extra])


@pytest.mark.slow
def test_stage_unseen_labels_never_reach_training(project, monkeypatch):
    import capfuse.stages.zeroshot as stage

    root, data, config = project
    trained: dict[str, list] = {}
    real = stage.train_projection

    def spy(*args, **kwargs):
        net, history = real(*args, **kwargs)
        trained.setdefault(current, []).append({k: v.clone() for k, v in net.state_dict().items()})
        return net, history

    monkeypatch.setattr(stage, "train_projection", spy)
    for current in ("zsa", "zsb", "zsc"):
        if current != "zsa":  # same images and captions: reuse zsa's cache and its fold file
            shutil.copytree(root / "runs" / "zsa" / "cache", root / "runs" / current / "cache")
            shutil.copy(root / "folds" / "zsa.csv", root / "folds" / f"{current}.csv")
        assert _run(root, root / "data" / current, config, "--force") == 0
    for name in trained:
        assert len(trained[name]) == 2 + 1  # one projector per held-out fold, then the deployed one

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    # The unseen class's labels changed (zsb): every evaluation projector is bit-identical.
    assert all(same(a, b) for a, b in zip(trained["zsa"][:2], trained["zsb"][:2]))
    # A seen class's labels changed (zsc): the projectors change, so the check above can fail.
    assert not any(same(a, c) for a, c in zip(trained["zsa"][:2], trained["zsc"][:2]))
    # The deployed projector learns from every class's labels, the unseen ones included.
    assert not same(trained["zsa"][2], trained["zsb"][2])


@pytest.mark.slow
def test_stage_writes_the_table_and_skips_when_up_to_date(project, capsys):
    root, data, config = project
    assert _run(root, data, config) == 0
    table = pd.read_csv(root / "runs" / "zsa" / "zeroshot.csv")
    assert list(table.columns) == ["scorer", "setting", "map", "f1@3", "f1@5", "gap@10", "n_images", "n_classes"]
    assert set(zip(table["scorer"], table["setting"])) == {
        (s, t) for s in ("image", "caption", "image+caption", "random") for t in ("zsl", "gzsl")
    }
    zsl = table[table["setting"] == "zsl"]
    assert (zsl["n_classes"] == 3).all() and zsl["f1@5"].isna().all() and zsl["f1@3"].notna().all()
    gzsl = table[table["setting"] == "gzsl"]
    assert (gzsl["n_images"] == 60).all() and (gzsl["n_classes"] == 18).all()  # every train row held out once
    assert table["map"].between(0, 1).all()
    folder = root / "runs" / "zsa" / "zeroshot"
    meta = yaml.safe_load((folder / "meta.json").read_text())
    assert meta["evaluation"]["unseen"] == ["bird", "cat", "dog"] and meta["trained_on"]["rows"] == 76
    per_class = pd.read_csv(folder / "per_class.csv")
    assert per_class["unseen"].sum() == 3

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(root, data, config) == 0  # nothing changed: nothing retrained
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert "image" in capsys.readouterr().out
