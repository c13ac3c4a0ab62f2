"""Embeddings for search: the export round-trips its ids, search finds the query first, and
images outside the cache are embedded exactly as the cache embeds them."""

import numpy as np
import pandas as pd
import pytest
import yaml

from capfuse.cli import main
from capfuse.data.demo import make_demo
from capfuse.features.image import ImageEncoderSpec, embed_image_features
from capfuse.zeroshot.inputs import embed_image_files
from capfuse.zeroshot.search import nearest, read_embeddings, write_embeddings


def test_export_round_trips_ids_and_normalises(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 4)) * 3
    ids = pd.DataFrame(
        {
            "ImageID": ["0.jpg", "007.jpg", "a,b.jpg", "x", "1e3"],
            "split": ["train"] * 3 + ["test"] * 2,
            "Caption": ['A "vintage" bus, parked', "", "NA", "null", "a dog"],
        }
    )
    write_embeddings(tmp_path, "m", vectors, ids, {"space": "image"})
    got, got_ids, meta = read_embeddings(tmp_path, "m")
    assert got.dtype == np.float32 and got.shape == (5, 4) and meta["rows"] == 5 and meta["space"] == "image"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)
    # Ids that look like numbers or missing values, and captions with commas and quotes, survive.
    pd.testing.assert_frame_equal(got_ids.drop(columns="row"), ids)
    assert list(got_ids["row"]) == list(range(5))


def test_export_refuses_mismatch(tmp_path):
    ids = pd.DataFrame({"ImageID": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="3 ids"):
        write_embeddings(tmp_path, "m", np.ones((2, 3)), ids, {"space": "image"})
    write_embeddings(tmp_path, "m", np.eye(3), ids, {"space": "image"})
    (tmp_path / "m_ids.csv").write_text("row,ImageID\n0,a\n1,b\n")
    with pytest.raises(ValueError, match="m_ids.csv"):
        read_embeddings(tmp_path, "m")
    with pytest.raises(FileNotFoundError, match="make embeddings"):
        read_embeddings(tmp_path, "other")


def test_nearest_finds_the_query_first_and_sorts():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows, sims = nearest(vectors, vectors[17] * 5.0, k=6)
    assert rows[0] == 17 and sims[0] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(sims) <= 0) and len(rows) == 6
    assert len(nearest(vectors, vectors[0], k=500)[0]) == 50
    with pytest.raises(ValueError):
        nearest(vectors, vectors[0], k=0)


CONFIG = {
    "seed": 1,
    "folds": {"k": 2, "seed": 1},
    "zeroshot": {
        "image_encoder": {"name": "tf_efficientnet_lite0", "size": 64, "grid": 2},
        "caption_encoder": {"name": "minilm", "max_len": 16},
        "unseen": ["cat", "dog"],
        "projector": {"hidden": 16},
        "train": {"epochs": 2, "batch_size": 16},
        "eval": {"eval_folds": [0], "random_seeds": 2},
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    config = root / "zs.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    data = root / "data" / "embmini"
    make_demo(data, n_train=40, n_test=12, size=64, seed=2)
    for cmd in ("folds", "zeroshot"):
        assert main([cmd, "--data", str(data), "--root", str(root), "--config", str(config), "--quiet"]) == 0
    return root, data, config


def cli(project, *args):
    root, data, config = project
    return main([args[0], "--data", str(data), "--root", str(root), "--config", str(config), "--quiet", *args[1:]])


@pytest.mark.slow
def test_embeddings_export_and_search(project, capsys):
    root, data, _ = project
    assert cli(project, "embeddings") == 0
    vectors, ids, meta = read_embeddings(root / "runs" / "embmini" / "embeddings", "zeroshot")
    train_ids, test_ids = (
        [line.split(",", 1)[0] for line in (data / f).read_text().splitlines()[1:]] for f in ("train.csv", "test.csv")
    )
    assert ids["ImageID"].tolist() == train_ids + test_ids  # train then test, every readable image once
    assert (ids["split"] == "train").sum() == 40 and vectors.shape == (52, 384) and meta["space"] == "text"

    capsys.readouterr()
    assert cli(project, "search", "--image", "3.jpg", "--k", "4") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["1", "3.jpg"] and len(lines) == 5  # header + 4 neighbours, itself first
    # The same image given as a file is embedded outside the cache (eager torch, not ONNX
    # Runtime) and still lands on itself: both paths compute the same features.
    assert cli(project, "search", "--image", str(data / "data" / "3.jpg"), "--k", "2") == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    assert first[1] == "3.jpg" and float(first[3]) > 0.99

    assert cli(project, "search", "--text", "a dog on a bus", "--k", "3") == 0
    out = capsys.readouterr().out.splitlines()
    cosines = [float(line.split()[3]) for line in out[1:]]
    assert len(cosines) == 3 and cosines == sorted(cosines, reverse=True)

    assert cli(project, "embeddings", "--model", "backbone") == 0
    _, _, meta = read_embeddings(root / "runs" / "embmini" / "embeddings", "backbone")
    assert meta["space"] == "image" and meta["dim"] == 1280
    assert cli(project, "search", "--model", "backbone", "--text", "a dog") == 2  # image features: no text queries
    assert cli(project, "search", "--image", "no-such.jpg") == 2


@pytest.mark.slow
def test_zeroshot_score_any_folder(project, tmp_path, capsys):
    root, data, _ = project
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("3.jpg", "5.jpg"):
        (folder / name).write_bytes((data / "data" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert (
        main(
            [
                "zeroshot-score",
                "--images",
                str(folder),
                "--labels",
                "cat, dog,red bus",
                "--data",
                str(data),
                "--root",
                str(root),
                "--out",
                str(out),
                "--top",
                "2",
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "cat", "dog", "red bus"]
    assert table["image"].tolist() == ["3.jpg", "5.jpg", "broken.jpg"]
    assert table.iloc[:2, 1:].notna().all().all() and table.iloc[2, 1:].isna().all()
    assert table.iloc[:2, 1:].abs().le(1.0 + 1e-5).all().all()  # cosines
    printed = capsys.readouterr().out
    assert "broken.jpg: (unreadable)" in printed and printed.count(",") >= 2
    assert (
        main(
            [
                "zeroshot-score",
                "--images",
                str(folder),
                "--labels",
                " , ",
                "--model",
                str(root / "runs" / "embmini" / "zeroshot"),
            ]
        )
        == 2
    )
    assert main(["zeroshot-score", "--images", str(folder), "--labels", "cat", "--model", str(tmp_path)]) == 2


def test_image_files_outside_the_cache_match_it(tmp_path):
    data = tmp_path / "data" / "one"
    make_demo(data, n_train=20, n_test=4, size=64, seed=4)
    ids = [f"{i}.jpg" for i in range(6)]
    spec = {"name": "tf_efficientnet_lite0", "size": 64, "grid": 2}
    cached = embed_image_features(
        data, ids, np.ones(6, bool), ImageEncoderSpec(**spec), tmp_path / "cache", view="hflip", quiet=True
    )
    feats, ok, problems = embed_image_files([data / "data" / i for i in ids], spec, views=("hflip",))
    assert ok == list(range(6)) and problems == []
    np.testing.assert_allclose(feats.pooled["hflip"], np.asarray(cached["pooled"], np.float32), rtol=0.02, atol=0.02)
    np.testing.assert_allclose(feats.tokens["hflip"], np.asarray(cached["tokens"], np.float32), rtol=0.02, atol=0.02)
