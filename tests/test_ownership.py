"""No stage deletes or overwrites what it does not own.

Names become folders only when plain and inside ``runs/<dataset>/``; a folder is removed only
when it holds capfuse's own ``fingerprint.json``; one run at a time holds a dataset's
``runs/<dataset>/.lock``; a fold is skipped only when its ``done.json`` carries the run's
fingerprint; ``ensemble.models: all`` stacks the config's own models; ``make clean`` refuses a
dataset name that is not plain.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import capfuse.training.cv as trainer_mod
from capfuse.cli import main
from capfuse.ensemble.second_level import choose_base_models
from capfuse.paths import Paths
from capfuse.training.cv import train_model
from capfuse.utils.lock import RunLocked

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "configs" / "pipeline.yaml"


# -- 1. plain names, folders inside runs/<dataset>/, removal of our own folders only --------------

BAD_NAMES = ["", ".", "..", "../x", "a/b", "/tmp/x", "a b", "x\n", "~user"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_model_name_must_be_plain(tmp_path, name):
    paths = Paths(data_dir=tmp_path / "data" / "tiny", root=tmp_path)
    with pytest.raises(ValueError, match="not a plain name"):
        paths.model_dir(name)


def test_plain_model_names_stay_in_the_runs_folder(tmp_path):
    paths = Paths(data_dir=tmp_path / "data" / "tiny", root=tmp_path)
    for name in ("fusion_crossattention", "fusion_crossattention@r1", "img-net.v2"):
        assert paths.model_dir(name) == tmp_path / "runs" / "tiny" / name


@pytest.mark.parametrize("folder", ["a b", "odd;name"])
def test_a_dataset_name_must_be_plain(tmp_path, folder):
    paths = Paths(data_dir=tmp_path / folder, root=tmp_path)
    with pytest.raises(ValueError, match="not a plain name"):
        _ = paths.runs


def test_the_filesystem_root_names_no_dataset(tmp_path):
    with pytest.raises(ValueError, match="not a plain name"):
        _ = Paths(data_dir=Path("/"), root=tmp_path).runs


def test_a_model_folder_that_a_symlink_puts_outside_runs_is_refused(tmp_path):
    paths = Paths(data_dir=tmp_path / "data" / "tiny", root=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths.runs.mkdir(parents=True)
    (paths.runs / "evil").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="outside"):
        paths.model_dir("evil")


C, N, N_TEST, K = 3, 60, 12, 2


@pytest.fixture
def synthetic(monkeypatch):
    """Features a linear model learns in a second, with K folds, as ``train_model`` takes them."""
    import scipy.sparse as sp

    # The cost report loads full backbones; these tests are about folders.
    monkeypatch.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})
    rng = np.random.default_rng(0)
    Yall = (rng.random((N + N_TEST, C)) < 0.4).astype(np.uint8)
    Yall[Yall.sum(1) == 0, 0] = 1
    x = Yall @ rng.normal(size=(C, 5)) + rng.normal(scale=0.5, size=(N + N_TEST, 5))
    feats = {
        "image_train": x[:N].astype(np.float32),
        "image_test": x[N:].astype(np.float32),
        "caption_train": sp.csr_matrix(x[:N]),
        "caption_test": sp.csr_matrix(x[N:]),
        "n_test": N_TEST,
    }
    common = dict(
        train_ids=[f"{i}.jpg" for i in range(N)],
        test_ids=[f"t{i}.jpg" for i in range(N_TEST)],
        Y=Yall[:N],
        folds=np.arange(N) % K,
        class_ids=list(range(1, C + 1)),
        feats=feats,
        data_fingerprint="synthetic",
    )
    return common


LINEAR = {"kind": "linear", "inputs": ["image"], "seed": 3, "C": 0.5}


def test_a_model_name_with_a_path_never_reaches_another_folder(tmp_path, synthetic):
    # A run folder of ours, one level up: a name like `../victim` must not retrain (remove) it.
    victim = tmp_path / "runs" / "victim"
    train_model("victim", LINEAR, out_dir=victim, **synthetic)
    (victim / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a plain name"):
        train_model(
            "../victim", {**LINEAR, "C": 0.25}, out_dir=tmp_path / "runs" / "tiny" / ".." / "victim", **synthetic
        )
    assert (victim / "precious.txt").read_text() == "keep"


def test_a_folder_without_our_fingerprint_is_never_removed(tmp_path, synthetic):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    out.mkdir(parents=True)
    (out / "precious.txt").write_text("the user's")
    with pytest.raises(ValueError, match="not written by capfuse"):
        train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert (out / "precious.txt").read_text() == "the user's"


def test_a_fingerprint_file_of_another_shape_is_not_ours(tmp_path, synthetic):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    out.mkdir(parents=True)
    (out / "fingerprint.json").write_text(json.dumps({"fingerprint": "0" * 64, "tool": "someone else's"}))
    (out / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not written by capfuse"):
        train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert (out / "precious.txt").exists()


def test_a_symlinked_run_folder_is_not_followed(tmp_path, synthetic):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "fingerprint.json").write_text(json.dumps({"fingerprint": "0" * 64}))
    (target / "precious.txt").write_text("keep")
    runs = tmp_path / "runs" / "tiny"
    runs.mkdir(parents=True)
    (runs / "image_linear").symlink_to(target)
    with pytest.raises(ValueError, match="outside"):
        train_model("image_linear", LINEAR, out_dir=runs / "image_linear", **synthetic)
    assert sorted(p.name for p in target.iterdir()) == ["fingerprint.json", "precious.txt"]


@pytest.mark.parametrize("fmt", ["current", "before"])
def test_a_changed_config_still_starts_over_in_our_own_folder(tmp_path, synthetic, fmt):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    record = json.loads((out / "fingerprint.json").read_text())
    assert record["capfuse"] >= 1  # marks the file, and so the folder, as ours
    if fmt == "before":  # a run folder written before the marker: the fingerprint alone
        (out / "fingerprint.json").write_text(json.dumps({"fingerprint": record["fingerprint"]}))
    (out / "stale.txt").write_text("from the old config")
    train_model("image_linear", {**LINEAR, "C": 0.25}, out_dir=out, **synthetic)
    assert not (out / "stale.txt").exists()
    assert [json.loads(line)["fold"] for line in (out / "log.jsonl").read_text().splitlines()] == [0, 1]


# -- 3. a fold is skipped only under the run's own fingerprint -----------------------------------


def _logged_folds(out: Path) -> list[int]:
    return [json.loads(line)["fold"] for line in (out / "log.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize("stale", ["other fingerprint", "no fingerprint"])
def test_a_fold_done_under_another_fingerprint_is_trained_again(tmp_path, synthetic, stale):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    fp = json.loads((out / "fingerprint.json").read_text())["fingerprint"]
    done = [json.loads((out / f"fold{k}" / "done.json").read_text()) for k in range(K)]
    assert [d["fingerprint"] for d in done] == [fp] * K
    # Fold 1 from another config (a second run mixing in, say) beside this run's fingerprint.
    other = dict(done[1])
    if stale == "other fingerprint":
        other["fingerprint"] = "f" * 64
    else:
        del other["fingerprint"]
    (out / "fold1" / "done.json").write_text(json.dumps(other))
    np.save(out / "fold1" / "val_logits.npy", np.zeros_like(np.load(out / "fold1" / "val_logits.npy")))
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert _logged_folds(out) == [0, 1, 1]  # fold 0 skipped, fold 1 trained again
    assert json.loads((out / "fold1" / "done.json").read_text())["fingerprint"] == fp
    assert np.abs(np.load(out / "fold1" / "val_logits.npy")).sum() > 0


def test_folds_of_the_run_itself_are_still_skipped(tmp_path, synthetic):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert _logged_folds(out) == [0, 1]


def test_a_fold_another_process_is_writing_is_never_shared(tmp_path, synthetic):
    """A (model, fold) job that outlived its run (a Dask worker keeps going after the client is
    stopped) holds its fold's lock; a rerun that reaches the same fold stops with the holder's
    name instead of writing into the same folder."""
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    (out / "fold1" / "done.json").unlink()  # fold 1 unfinished: its job is still at work
    before = sorted(p.name for p in (out / "fold1").iterdir())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out / ".fold1.lock"), "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"this fold is being trained by another process \(PID {holder.pid}"):
            train_model("image_linear", LINEAR, out_dir=out, **synthetic)
        assert sorted(p.name for p in (out / "fold1").iterdir()) == before  # nothing written into it
    finally:
        holder.kill()
        holder.wait()
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)  # the holder gone, the run finishes
    assert _logged_folds(out) == [0, 1, 1]


# -- 2. one run at a time per dataset ------------------------------------------------------------

# Holds runs/<dataset>/.lock the way the lock file is meant to be used (flock, PID inside), with
# nothing from capfuse: the protocol is the file, whoever holds it.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, (str(os.getpid()) + "\\n").encode())
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(runs: Path, seconds: float) -> subprocess.Popen:
    runs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(runs / ".lock"), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def lock_is_free(runs: Path) -> bool:
    fd = os.open(runs / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


class Probed(Exception):
    """Raised by a stage stand-in once it has looked at the lock."""


def probe_lock(runs: Path, seen: list):
    """A stand-in for a stage: records whether this process holds ``runs/.lock`` while it runs."""

    def stage(*args, **kwargs):
        held_by_us = not lock_is_free(runs) and (runs / ".lock").read_text().split("\n")[0] == str(os.getpid())
        seen.append(held_by_us)
        raise Probed

    return stage


ZS = str(REPO / "configs" / "zeroshot.yaml")
# Every command that resolves a dataset writes into runs/<dataset>/ (the validation report at
# least), with the stage function it runs first.
WRITING = {
    "validate": ("capfuse.stages.validate.load_dataset", []),
    "folds": ("capfuse.stages.folds.run_folds", []),
    "all": ("capfuse.stages.folds.run_folds", []),
    "embed": ("capfuse.stages.embed.run_embed", []),
    "train": ("capfuse.stages.train.run_train", []),
    "ratios": ("capfuse.stages.ratios.run_ratios", []),
    "ablate": ("capfuse.stages.ablate.run_ablate", ["--config", str(REPO / "configs" / "ablation.yaml")]),
    "stack": ("capfuse.stages.ensemble.run_stack", []),
    "thresholds": ("capfuse.stages.ensemble.run_thresholds", []),
    "infer": ("capfuse.stages.infer.run_infer", []),
    "report": ("capfuse.stages.report.run_report", []),
    "zeroshot": ("capfuse.stages.zeroshot.run_zeroshot", ["--config", ZS]),
    "embeddings": ("capfuse.stages.embeddings.run_embeddings", ["--config", ZS]),
    "search": ("capfuse.stages.embeddings.run_search", ["--config", ZS, "--text", "a dog"]),
}


def command(name: str, root: Path, *extra: str) -> list[str]:
    args = WRITING[name][1]
    config = [] if "--config" in args else ["--config", str(PIPELINE)]
    return [name, "--data", str(root / "data" / "tiny"), "--root", str(root), *config, *args, "--quiet", *extra]


@pytest.mark.parametrize("name", list(WRITING))
def test_every_writing_command_holds_the_dataset_lock_and_releases_it(tmp_path, monkeypatch, name):
    runs, seen = tmp_path / "runs" / "tiny", []
    monkeypatch.setattr(WRITING[name][0], probe_lock(runs, seen))
    with pytest.raises(Probed):
        main(command(name, tmp_path))
    assert seen == [True]
    assert lock_is_free(runs)  # released when the command ends, so `make all`'s next command runs


def test_a_second_run_stops_and_names_the_holder(tmp_path, monkeypatch, caplog):
    runs, seen = tmp_path / "runs" / "tiny", []
    monkeypatch.setattr(WRITING["validate"][0], probe_lock(runs, seen))
    holder = hold_lock(runs, 60)
    try:
        assert main(command("validate", tmp_path)) == 2
    finally:
        holder.kill()
        holder.wait()
    assert seen == []  # the stage never started
    assert f"PID {holder.pid}" in caplog.text and "--wait" in caplog.text


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, monkeypatch):
    runs, seen = tmp_path / "runs" / "tiny", []
    holder = hold_lock(runs, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (runs / ".lock").read_text().strip() == str(holder.pid)  # the dead run's PID is still there
    monkeypatch.setattr(WRITING["validate"][0], probe_lock(runs, seen))
    with pytest.raises(Probed):
        main(command("validate", tmp_path))
    assert seen == [True]


def test_wait_queues_behind_the_holder(tmp_path, monkeypatch):
    runs, seen = tmp_path / "runs" / "tiny", []
    monkeypatch.setattr(WRITING["validate"][0], probe_lock(runs, seen))
    holder = hold_lock(runs, 1.5)
    start = time.monotonic()
    try:
        with pytest.raises(Probed):
            main(command("validate", tmp_path, "--wait"))
    finally:
        holder.wait()
    assert seen == [True] and time.monotonic() - start > 1.0


def test_under_torchrun_only_rank_0_takes_the_lock(tmp_path, monkeypatch, caplog):
    runs, seen = tmp_path / "runs" / "tiny", []

    def stage(*args, **kwargs):
        seen.append("ran")
        raise Probed

    monkeypatch.setattr(WRITING["validate"][0], stage)
    holder = hold_lock(runs, 60)  # rank 0 of the same job, say
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with pytest.raises(Probed):
            main(command("validate", tmp_path))  # rank 1 does not wait on its own job's lock
        monkeypatch.setenv("RANK", "0")
        assert main(command("validate", tmp_path)) == 2  # rank 0 of another job stops
    finally:
        holder.kill()
        holder.wait()
    assert seen == ["ran"] and f"PID {holder.pid}" in caplog.text


# -- 4. `ensemble.models: all` is the config's own models ----------------------------------------

TRAINED = {
    name: {"cv_mean_f1": 0.5}
    for name in [
        "caption_linear",
        "image_linear",
        "image_linear@r1",
        "image_linear@r2",
        "image_linear_v2",
        "old_model",
        "old_model@r1",
        "image_linear@rx",
    ]
}


def test_all_stacks_the_configs_models_and_their_rounds_only(caplog):
    caplog.set_level("INFO", logger="capfuse")
    names = choose_base_models({"models": ["image_linear", "caption_linear"], "ensemble": {"models": "all"}}, TRAINED)
    assert names == ["caption_linear", "image_linear", "image_linear@r1", "image_linear@r2"]
    for other in ("image_linear_v2", "old_model", "old_model@r1", "image_linear@rx"):
        assert other in caplog.text  # listed as left out


def test_a_model_config_given_directly_stacks_itself():
    assert choose_base_models({"kind": "linear", "name": "image_linear"}, TRAINED) == [
        "image_linear",
        "image_linear@r1",
        "image_linear@r2",
    ]


def test_other_trained_models_join_when_named():
    cfg = {"models": ["image_linear", "caption_linear"], "ensemble": {"models": ["image_linear", "old_model"]}}
    assert choose_base_models(cfg, TRAINED) == ["image_linear", "old_model"]


def test_a_partly_trained_config_stacks_its_trained_part_and_says_so(caplog):
    assert choose_base_models({"models": ["image_linear", "fusion_labelquery"]}, TRAINED) == [
        "image_linear",
        "image_linear@r1",
        "image_linear@r2",
    ]
    assert "fusion_labelquery" in caplog.text and "not trained yet" in caplog.text
    with pytest.raises(FileNotFoundError, match="make train"):
        choose_base_models(
            {"models": ["fusion_labelquery"]}, TRAINED
        )  # not one of them trained: nothing of ours to stack


def test_a_model_left_in_the_runs_folder_stays_out_of_the_submission(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "project")
    runs = run.root / "runs" / "tiny"
    # Another config's model, trained earlier on the same dataset and folds, that looks best.
    shutil.copytree(runs / "caption_linear", runs / "foreign")
    metrics = json.loads((runs / "foreign" / "metrics.json").read_text())
    (runs / "foreign" / "metrics.json").write_text(json.dumps({**metrics, "model": "foreign", "cv_mean_f1": 0.99}))
    args = [
        "--set",
        "folds.k=3",
        "--set",
        "threshold.trials=20",
        "--set",
        "ensemble.stack.num_threads=1",
        "--set",
        "models=[caption_linear,image_linear]",
    ]  # tiny_run's pipeline
    assert (
        main(["infer", "--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet", *args])
        == 0
    )
    manifest = json.loads((run.root / "submissions" / "tiny-latest.json").read_text())
    assert sorted(manifest["models"]) == ["caption_linear", "image_linear"]


# -- 5. `make clean` with an odd DATA ------------------------------------------------------------


def _tree(base: Path) -> tuple[Path, list[Path]]:
    """A project folder holding runs of two datasets, a user folder and files a bad `rm` would hit."""
    project = base / "project"
    sentinels = [
        base / "outside.txt",
        project / "b",
        project / "keep.txt",
        project / "runs" / "other" / "keep.txt",
        project / "data" / "mine" / "keep.txt",
    ]
    for path in sentinels:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    (project / "runs" / "x").mkdir()
    (project / "runs" / "x" / "oof.csv").write_text("of dataset x")
    return project, sentinels


def make_clean(project: Path, data: str, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "-C", str(project), "clean", f"DATA={data}", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("data", ["", "/", ".", "..", "a b", "data/..", "x/ ;touch pwned"])
def test_make_clean_refuses_a_dataset_name_that_is_not_plain(tmp_path, data):
    project, sentinels = _tree(tmp_path)
    done = make_clean(project, data, tmp_path / "no-venv")
    assert done.returncode == 2 and "nothing removed" in done.stderr
    assert all(p.read_text() == "keep" for p in sentinels)
    assert (project / "runs" / "x" / "oof.csv").exists() and not (project / "pwned").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("target", ["all", "train", "infer", "export", "checksums", "clean", "data"])
def test_every_target_stops_on_a_data_path_with_a_space(tmp_path, target):
    """make would hand each recipe the two halves of the path; every target stops first, with
    one line that says how to run it anyway, and runs nothing (a fake capfuse records any call)."""
    project, sentinels = _tree(tmp_path)
    spaced = project / "my data"
    spaced.mkdir()
    (spaced / "train.csv").write_text("ImageID,Labels,Caption\n")
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake-capfuse"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        [
            "make",
            "-f",
            str(REPO / "Makefile"),
            "-C",
            str(project),
            target,
            f"DATA={spaced}",
            f"RUN={fake}",
            "-o",
            str(tmp_path / "no-venv" / ".installed"),
            f"VENV={tmp_path / 'no-venv'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "holds a space" in done.stderr and "capfuse all --data" in done.stderr
    assert not calls.exists() and all(p.read_text() == "keep" for p in sentinels)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_removes_only_the_named_datasets_runs(tmp_path):
    project, sentinels = _tree(tmp_path)
    done = make_clean(project, "../x", tmp_path / "no-venv")
    assert done.returncode == 0, done.stderr
    assert not (project / "runs" / "x").exists()
    assert all(p.read_text() == "keep" for p in sentinels)


# -- the unlabelled demo folder ------------------------------------------------------------------


def test_capfuse_data_keeps_a_foreign_folder_where_the_unlabelled_one_goes(tmp_path, caplog):
    foreign = tmp_path / "tiny-unlabelled"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    assert main(["data", "--data", str(tmp_path / "tiny"), "--unlabelled", "4"]) == 2
    assert (foreign / "precious.txt").read_text() == "keep" and "not written by" in caplog.text


def test_capfuse_faulty_keeps_a_foreign_folder_and_replaces_its_own(tmp_path, caplog):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "test.csv").write_text("ImageID,Caption\n1.jpg,a cat\n")
    assert main(["faulty", "--data", str(foreign)]) == 2
    assert (foreign / "test.csv").read_text() == "ImageID,Caption\n1.jpg,a cat\n" and "not replaced" in caplog.text
    faulty = tmp_path / "faulty"
    assert main(["faulty", "--data", str(faulty)]) == 0
    (faulty / "extra.txt").write_text("left by a run")
    assert main(["faulty", "--data", str(faulty)]) == 0  # its own folder is rewritten
    assert not (faulty / "extra.txt").exists()


def test_last_rounds_stack_each_models_final_round_in_its_place():
    cfg = {"models": ["image_linear", "caption_linear"], "ensemble": {"models": "all", "rounds": "last"}}
    assert choose_base_models(cfg, {**TRAINED, "image_linear@r10": {}}) == ["caption_linear", "image_linear@r10"]
    assert choose_base_models(cfg, TRAINED) == ["caption_linear", "image_linear@r2"]
    with pytest.raises(ValueError, match="ensemble.rounds"):
        choose_base_models({**cfg, "ensemble": {"rounds": "best"}}, TRAINED)


def make_clean_all(project: Path, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "-C", str(project), "clean-all", "DATA=x", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_all_keeps_a_venv_folder_it_did_not_build(tmp_path):
    project, sentinels = _tree(tmp_path)
    home = tmp_path / "home"  # VENV=$HOME: a user's folder, no venv stamp in it
    (home / "thesis.tex").parent.mkdir()
    (home / "thesis.tex").write_text("keep")
    done = make_clean_all(project, home)
    assert done.returncode == 2 and "nothing removed" in done.stderr and str(home) in done.stderr
    assert (home / "thesis.tex").read_text() == "keep"
    assert (project / "runs" / "x" / "oof.csv").exists()  # stopped before `make clean` and `rm -rf runs`


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_all_removes_the_venv_it_built_and_every_run(tmp_path):
    project, _ = _tree(tmp_path)
    venv = tmp_path / "venv with space"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / ".installed").touch()
    done = make_clean_all(project, venv)
    assert done.returncode == 0, done.stderr
    assert not venv.exists() and not (project / "runs").exists()
    assert (tmp_path / "outside.txt").read_text() == "keep"


# -- values that reach the shell -----------------------------------------------------------------


def _fake_project(base: Path) -> tuple[Path, Path]:
    """A project folder whose venv's `capfuse` records its arguments, one per line."""
    project, venv = base / "project", base / "venv"
    (venv / "bin").mkdir(parents=True)
    project.mkdir()
    for name in ("requirements.txt", "requirements-weights.txt", "requirements-dev.txt", "pyproject.toml"):
        (project / name).write_text("")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    tool = venv / "bin" / "capfuse"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{base}/args.txt"\n')
    tool.chmod(0o755)
    (venv / ".installed").touch()  # newer than the requirements files: no install
    return project, venv


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize(
    ("target", "variables", "expected"),
    [
        (
            "predict",
            {"BUNDLE": "b;touch pwned", "OUT": "o $(touch pwned)"},
            ["--bundle", "b;touch pwned", "--out", "o $(touch pwned)"],
        ),
        ("export", {"OUT": "x`touch pwned`"}, ["--out", "x`touch pwned`"]),
        ("train", {"SCHEDULER": "tcp://x;touch pwned"}, ["--scheduler", "tcp://x;touch pwned"]),
    ],
)
def test_values_reach_the_program_whole_and_the_shell_never_runs_them(tmp_path, target, variables, expected):
    project, venv = _fake_project(tmp_path)
    (project / "data" / "own").mkdir(parents=True)
    (project / "data" / "own" / "train.csv").write_text("ImageID,Labels,Caption\n")
    args = [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "-C", str(project), target, "DATA=data/own", f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    got = (tmp_path / "args.txt").read_text().splitlines()
    assert all(any(g == e for g in got) for e in expected), got
    assert not (project / "pwned").exists() and not (REPO / "pwned").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_of_a_symlinked_data_folder_removes_the_runs_capfuse_wrote_for_it(tmp_path):
    project, sentinels = _tree(tmp_path)
    (project / "data" / "real").mkdir(parents=True)
    (project / "data" / "link").symlink_to(project / "data" / "real")
    (project / "runs" / "real").mkdir()
    (project / "runs" / "real" / "oof.csv").write_text("written for data/link: capfuse names it real")
    (project / "runs" / "link").mkdir()
    (project / "runs" / "link" / "keep.txt").write_text("keep")
    done = make_clean(project, "data/link", tmp_path / "no-venv")
    assert done.returncode == 0, done.stderr
    assert not (project / "runs" / "real").exists()
    assert (project / "runs" / "link" / "keep.txt").read_text() == "keep"
    assert all(p.read_text() == "keep" for p in sentinels)
