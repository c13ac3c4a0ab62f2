"""The embed stage caches what each configured model reads, once, and train finds it there."""

import numpy as np
import pytest
import yaml

from capfuse.cli import main
from capfuse.data.demo import make_demo


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    data = root / "data" / "mini"
    make_demo(data, n_train=40, n_test=12, size=64, seed=3)
    models = root / "configs" / "models"
    models.mkdir(parents=True)
    base = {
        "kind": "net",
        "image_encoder": {"name": "tf_efficientnet_lite0", "size": 64, "grid": 2},
        "caption_encoder": {"name": "minilm", "max_len": 16},
        "image_head": {"kind": "mlp", "hidden": 16},
        "caption_head": {"kind": "mlp", "hidden": 16},
        "fusion": {"d_model": 16, "heads": 2},
        "train": {"epochs": 2, "batch_size": 16},
    }
    configs = {
        "img": {**base, "inputs": ["image"]},
        "img_top": {**base, "inputs": ["image"], "image_encoder": {**base["image_encoder"], "train_blocks": 1}},
        "glove": {
            **base,
            "inputs": ["caption"],
            "caption_encoder": {"name": "glove", "max_len": 16},
            "caption_head": {"kind": "attn", "hidden": 16, "heads": 2, "queries": 2},
        },
        "fusion": {**base, "inputs": ["image", "caption"]},
    }
    for name, cfg in configs.items():
        (models / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    pipeline = root / "configs" / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"models": list(configs), "folds": {"k": 2}}))
    return root, data, pipeline


def cli(root, data, pipeline, *args):
    return main([args[0], "--data", str(data), "--root", str(root), "--config", str(pipeline), "--quiet", *args[1:]])


@pytest.mark.slow
def test_embed_caches_every_models_inputs_once(project, monkeypatch, capsys):
    import capfuse.features.image as features

    root, data, pipeline = project
    decoded = []
    real = features.load_array
    monkeypatch.setattr(features, "load_array", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    assert cli(root, data, pipeline, "embed") == 0
    cache = root / "runs" / "mini" / "cache"
    names = sorted(p.name for p in cache.glob("*.npy"))
    for view in ("orig", "hflip"):
        # One backbone pass per view served the pooled vectors, the token grid and the mid map.
        assert {f"img-tf_efficientnet_lite0-64px-{view}-{o}.npy" for o in ("pooled", "tokens2", "mid1")} <= set(names)
    assert any(n.startswith("txt-minilm-16tok-all.") for n in names)
    assert len(decoded) == 52  # every image once, for both views and every output: no more
    assert "cached arrays in" in capsys.readouterr().out

    decoded.clear()
    assert cli(root, data, pipeline, "folds") == 0
    assert cli(root, data, pipeline, "train") == 0
    assert decoded == []  # train read the cache: no image decoded again
    board = (root / "runs" / "mini" / "leaderboard.csv").read_text()
    assert all(m in board for m in ("img", "img_top", "glove", "fusion"))
    for model in ("img_top", "glove"):
        metrics = yaml.safe_load((root / "runs" / "mini" / model / "metrics.json").read_text())
        assert 0.0 < metrics["cv_mean_f1"] <= 1.0 and metrics["params"] > 0


@pytest.mark.slow
def test_embed_only_some_models(project):
    root, data, pipeline = project
    assert cli(root, data, pipeline, "embed", "--only", "nope") == 2  # a clear error, not a crash
    assert cli(root, data, pipeline, "embed", "--only", "glove") == 0


@pytest.mark.slow
def test_label_ratio_mode_end_to_end(project):
    """`capfuse ratios`: the same held-out rows at every share, pseudo-labels never from the fold."""
    import pandas as pd

    root, data, pipeline = project
    cfg = yaml.safe_load(pipeline.read_text())
    ratios = root / "configs" / "ratios.yaml"
    ratios.write_text(
        yaml.safe_dump(
            {
                **cfg,
                "ratios": {"percents": [25, 100], "models": ["img"], "pseudo_rounds": 1},
                "pseudo": {"pos_keep": 0.5, "ramp_epochs": 1, "min_gain": -1.0},
            }
        )
    )
    assert cli(root, data, ratios, "folds") == 0
    assert cli(root, data, ratios, "ratios") == 0
    table = pd.read_csv(root / "runs" / "mini" / "label_ratios.csv")
    assert table["percent"].tolist() == [25.0, 100.0]
    # 25 % of 40 rows, plus a row back for any class the stratified draw left without a positive.
    assert 10 <= table["labelled_rows"][0] <= 14 and table["labelled_rows"][1] == 40
    assert table["cv_mean_f1_without"].between(0, 1).all() and table["cv_mean_f1_round1"].between(0, 1).all()
    folds = pd.read_csv(root / "folds" / "mini.csv", dtype={"ImageID": str})["fold"].to_numpy()
    run = root / "runs" / "mini" / "ratios" / "p25" / "img@r1"
    for k in (0, 1):
        rows = np.load(run / f"fold{k}" / "pseudo_rows.npy")
        train_rows = rows[rows < len(folds)]
        assert len(train_rows) and not (folds[train_rows] == k).any()  # never the scored fold's rows
        assert (rows >= len(folds)).sum() == 12  # and every test image
    oof = pd.read_csv(run / "oof_logits.csv")
    assert len(oof) == len(folds)  # every train row is scored, labelled or not


@pytest.mark.slow
def test_stack_refuses_a_model_trained_on_other_folds(project, caplog):
    """OOF logits made with another fold file saw the rows they predict: the stack stage says so."""
    import pandas as pd

    root, data, pipeline = project
    assert cli(root, data, pipeline, "folds") == 0
    assert cli(root, data, pipeline, "train", "--only", "img") == 0
    oof_file = root / "runs" / "mini" / "img" / "oof_logits.csv"
    oof = pd.read_csv(oof_file, dtype={"ImageID": str})
    oof["fold"] = 1 - oof["fold"]  # as if trained with the folds swapped
    oof.to_csv(oof_file, index=False)
    assert cli(root, data, pipeline, "stack") == 2
    assert "its folds differ from" in caplog.text and "img" in caplog.text


@pytest.mark.slow
def test_an_unlabelled_folder_joins_the_pool_of_models_with_rounds(project, tmp_path):
    """`data.unlabelled`: its rows are embedded apart, predicted, pseudo-labelled and reported."""
    import pandas as pd

    from capfuse.data.demo import make_unlabelled

    root, data, pipeline = project
    extra = tmp_path / "extra"
    make_unlabelled(extra, 10, size=64, seed=3, captions=True)
    # One listed image is missing: it leaves the pool with a warning, the run goes on.
    with open(extra / "unlabelled.csv", "a") as fh:
        fh.write("gone.jpg,a dog on a bench\n")
    cfg = yaml.safe_load(pipeline.read_text())
    cfg_path = root / "configs" / "extra.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                **cfg,
                "models": ["img", "fusion"],
                "data": {"unlabelled": str(extra)},
                "pseudo": {"rounds": 1, "ramp_epochs": 1, "min_gain": -1.0},
            }
        )
    )
    assert cli(root, data, cfg_path, "folds") == 0
    assert cli(root, data, cfg_path, "train", "--only", "fusion") == 0
    n_train, n_test = 40, 12
    run = root / "runs" / "mini" / "fusion@r1"
    for k in (0, 1):
        rows = np.load(run / f"fold{k}" / "pseudo_rows.npy")
        assert (rows >= n_train + n_test).sum() == 10  # every usable folder image, none twice
        assert rows.max() == n_train + n_test + 9
    producer = root / "runs" / "mini" / "fusion" / "fold0" / "extra_logits.npy"
    assert np.load(producer).shape == (10, 18)  # round 0 predicted the folder for round 1
    assert (root / "runs" / "mini" / "cache" / "unlabelled").is_dir()  # cached apart from train/test
    report = pd.read_csv(root / "runs" / "mini" / "pseudo_rounds.csv")
    r1 = report[(report["model"] == "fusion@r1") & (report["class"] == "all")].iloc[0]
    assert 0 <= r1["precision"] <= 1  # scored against test_labels.csv and unlabelled_labels.csv

    # Without captions too: the empty caption is a row like any other.
    bare = tmp_path / "bare"
    make_unlabelled(bare, 6, size=64, seed=4, captions=False)
    cfg_path.write_text(
        yaml.safe_dump(
            {
                **cfg,
                "models": ["fusion"],
                "data": {"unlabelled": str(bare)},
                "pseudo": {"rounds": 1, "ramp_epochs": 1, "min_gain": -1.0},
            }
        )
    )
    assert cli(root, data, cfg_path, "train") == 0
    assert (np.load(run / "fold0" / "pseudo_rows.npy") >= n_train + n_test).sum() == 6


def test_unlabelled_folder_errors_name_the_file_and_line(tmp_path):
    from capfuse.data.problems import DataError
    from capfuse.data.unlabelled import load_unlabelled

    folder = tmp_path / "u"
    (folder / "data").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(folder / "data" / "a.jpg")
    (folder / "unlabelled.csv").write_text("ImageID,Caption\na.jpg,a cat, on a mat\n7.jpg,a dog\n")
    with pytest.raises(DataError, match=r"unlabelled.csv line 3: ImageID '7.jpg' is also a train or test id"):
        load_unlabelled(folder, {"7.jpg"})
    (folder / "unlabelled.csv").write_text("ImageID,Caption\na.jpg,x\na.jpg,y\n")
    with pytest.raises(DataError, match=r"line 3: ImageID 'a.jpg' is listed twice"):
        load_unlabelled(folder, set())
    (folder / "unlabelled.csv").write_text("ImageID,Caption\n../a.jpg,x\n")
    with pytest.raises(DataError, match=r"line 2: .*outside"):
        load_unlabelled(folder, set())
    (folder / "unlabelled.csv").write_text('ImageID,Caption\na.jpg,"a cat, on a mat"\n')
    table = load_unlabelled(folder, set())
    assert table["Caption"].tolist() == ["a cat, on a mat"]
    (folder / "unlabelled.csv").unlink()  # no csv: every image of data/, no captions
    assert load_unlabelled(folder, set())[["ImageID", "Caption"]].values.tolist() == [["a.jpg", ""]]


@pytest.mark.slow
def test_label_query_alignment_scores_drive_a_pseudo_label_round(project):
    root, data, pipeline = project
    cfg = yaml.safe_load(pipeline.read_text())
    models = root / "configs" / "models"
    lq = yaml.safe_load((models / "fusion.yaml").read_text())
    lq["fusion"] = {**lq["fusion"], "label_query": {"d_model": 16, "heads": 2}}
    (models / "lq.yaml").write_text(yaml.safe_dump(lq))
    cfg_path = root / "configs" / "align.yaml"
    cfg_path.write_text(
        yaml.safe_dump({**cfg, "models": ["lq"], "pseudo": {"rounds": 1, "scores": "align", "min_gain": -1.0}})
    )
    assert cli(root, data, cfg_path, "folds") == 0
    assert cli(root, data, cfg_path, "train") == 0
    run = root / "runs" / "mini"
    assert np.load(run / "lq" / "fold0" / "test_align.npy").shape == (12, 18)
    info = yaml.safe_load((run / "lq@r1" / "fold0" / "pseudo.json").read_text())
    assert info["scores"] == "align" and info["producer"] == "lq"
