"""Class names discovered from the captions (capfuse.data.names) and where they go.

Discovery on captions whose words are known to belong to a class; a dataset with a
classes.csv keeps its names and writes nothing; a dataset without one gets discovered names in
classes_discovered.csv; and the honesty test: inside cross-validation a fold's names, prompts
and OOF logits are the same whatever its own held-out labels are.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import capfuse.training.cv as trainer_mod
from capfuse.data.dataset import load_dataset
from capfuse.data.names import (
    DISCOVERED_FILE,
    DiscoverySettings,
    choose_names,
    discover_names,
    fold_prompt_terms,
)
from capfuse.models.net import NetModel
from capfuse.paths import Paths
from capfuse.training.cv import train_model

# Class -> (its words, a word it shares with another class). "vehicle" is said of car and
# truck alike; "street" is where cars and trucks are, said in a setting phrase.
WORDS = {
    1: ["dog", "puppy"],
    2: ["cat", "kitten"],
    3: ["car", "sedan"],
    4: ["fire hydrant", "hydrant"],
    5: ["truck", "lorry"],
}


def synthetic(n: int = 400, seed: int = 0) -> tuple[list[str], np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    ids = sorted(WORDS)
    Y = (rng.random((n, len(ids))) < 0.3).astype(np.uint8)
    Y[Y.sum(1) == 0, rng.integers(0, len(ids))] = 1
    captions = []
    for row in Y:
        parts = []
        for c in np.flatnonzero(row):
            cid = ids[c]
            if rng.random() < 0.8:  # a caption names most of what is there, by one of its words
                word = WORDS[cid][rng.integers(0, 2)]
                parts.append("a vehicle" if cid in (3, 5) and rng.random() < 0.3 else f"a {word}")
        where = " on the street" if row[2] or row[4] else " in the room"
        captions.append(("There is " + " and ".join(parts) if parts else "A view") + where + ".")
    return captions, Y, ids


def test_discovered_names_are_each_class_s_own_words_and_deterministic():
    captions, Y, ids = synthetic()
    found = discover_names(captions, Y, ids)
    assert [f.id for f in found] == ids
    for f in found:
        assert f.name in WORDS[f.id], (f.id, f.name, f.terms)
        assert "vehicle" not in f.terms[:2] and "street" not in f.terms[:1]  # shared and setting words rank low
        assert not {"a", "the", "there", "and", "is"} & set(f.terms)
    # "hydrant" is said inside "fire hydrant" half the time: the display name is the compound.
    assert next(f for f in found if f.id == 4).name == "fire hydrant"
    assert discover_names(list(captions), Y.copy(), ids) == found


def test_a_word_said_only_inside_a_compound_is_not_a_term_of_its_own():
    captions, Y, ids = synthetic()
    # Class 2's second word becomes "double decker": "double" and "decker" are never said alone.
    found = {f.id: f for f in discover_names([c.replace("kitten", "double decker") for c in captions], Y, ids)}
    assert "double decker" in found[2].terms
    assert not {"double", "decker"} & set(found[2].terms)
    assert "hydrant" in found[4].terms  # said alone as well as inside "fire hydrant": it stays


def test_a_class_its_captions_never_set_apart_keeps_a_number():
    captions = ["a dog", "a cat", "a dog", "a cat"] * 5
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]] * 5, np.uint8)  # class 3: half of each
    found = discover_names(captions, Y, [1, 2, 3])
    assert [f.name for f in found] == ["dog", "cat", "class 3"]


def test_a_classes_csv_wins_and_numbers_say_class_n():
    captions, Y, ids = synthetic(100)
    given = ["hound", "moggy", "auto", "plug", "lorry"]
    assert choose_names("auto", True, given, captions, Y, ids).names == tuple(given)
    assert choose_names("numbers", True, given, captions, Y, ids).names == tuple(f"class {c}" for c in ids)
    assert choose_names("discover", True, given, captions, Y, ids).discovered
    with pytest.raises(ValueError, match="class_names"):
        choose_names("guess", False, given, captions, Y, ids)


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory):
    """The tiny dataset twice: as generated (with classes.csv) and without classes.csv."""
    from capfuse.data.demo import PRESETS, make_demo

    root = tmp_path_factory.mktemp("names")
    named, bare = root / "data" / "named", root / "data" / "bare"
    make_demo(named, **PRESETS["tiny"], seed=0)
    shutil.copytree(named, bare, symlinks=True)
    (bare / "classes.csv").unlink()
    return root, named, bare


def test_a_dataset_with_classes_csv_keeps_its_names_and_writes_nothing(tiny_copy):
    root, named, _ = tiny_copy
    paths = Paths(named, root)
    ds = load_dataset(paths, {"data": {"workers": 1}}, quiet=True)
    assert ds.names.source == "file"
    assert list(ds.val.classes.names) == [
        line.split(",", 1)[1] for line in (named / "classes.csv").read_text().splitlines()[1:]
    ]
    assert not (paths.runs / DISCOVERED_FILE).exists()


def test_a_dataset_without_classes_csv_gets_discovered_names_in_a_file(tiny_copy):
    root, _, bare = tiny_copy
    paths = Paths(bare, root)
    ds = load_dataset(paths, {"data": {"workers": 1}}, quiet=True)
    assert ds.names.discovered
    # A few dozen rows: a rare class may find no word of its own and keep its number.
    assert sum(not n.startswith("class ") for n in ds.val.classes.names) > len(ds.class_ids) / 2
    lines = (paths.runs / DISCOVERED_FILE).read_text().splitlines()
    assert lines[0] == "id,name,terms,score" and len(lines) == 1 + len(ds.class_ids)
    assert [line.split(",")[1] for line in lines[1:]] == list(ds.val.classes.names)
    assert not list(paths.runs.glob(f".{DISCOVERED_FILE}*"))  # written through a temporary file


# -- honesty: a fold's names never come from its own labels ----------------------------------------


def test_fold_names_read_only_the_fold_s_training_rows():
    captions, Y, ids = synthetic()
    rows = np.arange(0, len(Y), 2)
    held = np.arange(1, len(Y), 2)
    Y2 = Y.copy()
    Y2[held] = Y[np.random.default_rng(3).permutation(held)]
    a = fold_prompt_terms(captions, Y[rows], rows, ids, DiscoverySettings())
    b = fold_prompt_terms(captions, Y2[rows], rows, ids, DiscoverySettings())
    assert a == b
    assert discover_names(captions, Y, ids) != discover_names(captions, Y2, ids)  # the shuffle is real


def _features(captions, n_test: int, C: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(captions) + n_test
    img = rng.normal(size=(n, 4, 8)).astype(np.float32)
    cap = rng.normal(size=(n, 5, 6)).astype(np.float32)
    orig = {
        "img_tokens": img,
        "img_pooled": img.mean(1),
        "cap_tokens": cap,
        "cap_pooled": cap.mean(1),
        "cap_mask": np.ones((n, 5), np.uint8),
    }
    return {
        "views": {"orig": orig},
        "n_test": n_test,
        "dims": {"img_pooled": 8, "img_tokens": 8, "cap_pooled": 6, "cap_tokens": 6},
        "class_names": [f"class {c}" for c in range(1, C + 1)],
        "class_ids": sorted(WORDS),
        "class_discovery": {"captions": list(captions), "settings": DiscoverySettings()},
    }


def test_shuffling_a_held_out_fold_s_labels_changes_nothing_in_that_fold(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})

    def fake_text(self, feats, n, terms=None):
        # A vector per term list, so that other terms give other prompts (MiniLM stands aside).
        seeds = [sum(map(ord, "|".join(t))) for t in terms]
        return np.stack([np.random.default_rng(s).normal(size=6) for s in seeds]).astype(np.float32)

    monkeypatch.setattr(NetModel, "class_text", fake_text)
    captions, Y, ids = synthetic(90)
    folds = np.arange(len(Y)) % 3
    feats = _features(captions, 16, len(ids))
    cfg = {
        "kind": "net",
        "inputs": ["image", "caption"],
        "seed": 3,
        "image_head": {"kind": "mlp", "hidden": 8},
        "caption_head": {"kind": "mlp", "hidden": 8},
        "fusion": {"logit_fusion": True, "cross_attention": False, "d_model": 8, "heads": 2, "label_query": True},
        "train": {"epochs": 1, "batch_size": 32, "early_stop": "none", "tta": False},
    }
    Y2 = Y.copy()
    held = np.flatnonzero(folds == 0)
    Y2[held] = Y[np.random.default_rng(1).permutation(held)]
    out = {}
    for tag, labels in (("true", Y), ("shuffled", Y2)):
        train_model(
            tag,
            cfg,
            out_dir=tmp_path / tag,
            train_ids=[f"{i}.jpg" for i in range(len(Y))],
            test_ids=[f"t{i}.jpg" for i in range(16)],
            Y=labels,
            folds=folds,
            class_ids=ids,
            feats=feats,
            data_fingerprint="synthetic",
        )
        out[tag] = {
            f: (
                json.loads((tmp_path / tag / f"fold{f}" / "class_names.json").read_text()),
                np.load(tmp_path / tag / f"fold{f}" / "val_logits.npy"),
            )
            for f in range(3)
        }
    names0, logits0 = out["true"][0]
    assert out["shuffled"][0][0] == names0
    np.testing.assert_array_equal(out["shuffled"][0][1], logits0)
    # Folds 1 and 2 train on fold 0's rows: their names' scores move, so the shuffle was seen.
    assert out["shuffled"][1][0] != out["true"][1][0]


def test_names_ablation_averages_seeds_before_the_share(tmp_path, monkeypatch):
    """--seeds: each naming trains once per seed; the share comes from the means over seeds and
    each seed's own share is listed (the model and zero-shot are stubbed: this is the table)."""
    import pandas as pd

    import capfuse.stages.names as names_stage

    data = tmp_path / "data"
    data.mkdir()
    (data / "classes.csv").write_text("id,name\n1,dog\n")
    # CV mean F1 by (naming, seed): true names gain 0.010 and 0.030 over "class N" (mean 0.020),
    # discovered names 0.008 and 0.012 (mean 0.010): half the mean gain.
    f1 = {
        ("classes.csv", 1): 0.81,
        ("classes.csv", 2): 0.83,
        ("discovered", 1): 0.808,
        ("discovered", 2): 0.812,
        ("class N", 1): 0.80,
        ("class N", 2): 0.80,
    }
    seen = []

    def fake_train(paths, cfg, config_path, model, label, quiet, seed=None):
        seen.append((label, seed))
        return {"cv_mean_f1": f1[(label, seed)], "cv_map": 0.5}

    monkeypatch.setattr(names_stage, "_train", fake_train)
    monkeypatch.setattr(
        names_stage, "_zeroshot", lambda *a, **k: {"zsl_map_image": 0.5, "gzsl_map_image": 0.5, "zsl_map_caption": 0.5}
    )
    monkeypatch.setattr(names_stage, "discovered_table", lambda *a, **k: pd.DataFrame({"id": [1], "name": ["dog"]}))
    paths = Paths(data_dir=data, root=tmp_path)
    table = names_stage.run_names_ablation(paths, {}, tmp_path / "c.yaml", {}, model="m", quiet=True, seeds=[1, 2])
    assert sorted(seen) == sorted(f1)
    means = table.set_index("names")["cv_mean_f1"]
    assert means["classes.csv"] == pytest.approx(0.82) and means["discovered"] == pytest.approx(0.81)
    assert names_stage.recovered(table, "cv_mean_f1") == pytest.approx(0.5)
    assert table.set_index("names").loc["classes.csv", "cv_mean_f1_sd"] == pytest.approx(np.std([0.81, 0.83], ddof=1))
    text = (tmp_path / "runs" / "data" / "names" / "ablation.md").read_text()
    assert "cv_mean_f1 50%" in text and "seed 1 80%" in text and "seed 2 40%" in text
    assert len(pd.read_csv(tmp_path / "runs" / "data" / "names" / "ablation_seeds.csv")) == 6
