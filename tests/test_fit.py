"""``capfuse.fit`` is ``make all`` from Python: the same stages write the same artefacts and the
same submission under the same lock, errors are raised, and the Predictor it returns (the run's
bundle) predicts that submission, before and after ``save``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import capfuse
import capfuse.api as api
from capfuse.bundle import BundleError, Predictor
from capfuse.cli import build_parser, main
from capfuse.config import ConfigError
from capfuse.submission import read_submission
from capfuse.utils.io import read_json
from capfuse.utils.lock import RunLocked, dataset_lock
from conftest import TINY_RUN_ARGS

OVERRIDES = list(TINY_RUN_ARGS[1::2])  # the tiny run's --set values
assert TINY_RUN_ARGS[::2] == ("--set",) * len(OVERRIDES)


def _fit(run, *more: str, **kwargs) -> Predictor:
    return capfuse.fit(run.data, config=run.config, root=run.root, overrides=[*OVERRIDES, *more], quiet=True, **kwargs)


def _files(root: Path) -> list[str]:
    """The run's artefacts by path, the submissions' timestamps and the run bundle left out."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or rel.startswith(("data/", "runs/tiny/bundle/")):
            continue
        out.append("submissions/<stamped>" + p.suffix if rel.startswith("submissions/tiny-2") else rel)
    return sorted(out)


@pytest.fixture(scope="module")
def refit(tiny_run, tmp_path_factory):
    """``capfuse.fit`` over a copy of the tiny run without its caption model, second level and
    submissions, so that fit writes them again (the copy's images are new files to the feature
    cache, so the image model is embedded and trained again too); the folds file is kept."""
    run = tiny_run.copy(tmp_path_factory.mktemp("fit") / "project")
    runs = run.root / "runs" / "tiny"
    for gone in (runs / "caption_linear", runs / "ensemble", run.root / "submissions"):
        shutil.rmtree(gone)
    for gone in ("leaderboard.csv", "timings.csv"):
        (runs / gone).unlink()
    return run, _fit(run)


@pytest.mark.slow
def test_fit_writes_what_capfuse_all_writes_and_predicts_its_submission(tiny_run, refit, tmp_path):
    run, predictor = refit
    for rel in (
        "submissions/tiny-latest.csv",
        "runs/tiny/caption_linear/oof_logits.csv",
        "runs/tiny/caption_linear/test_logits.csv",
        "runs/tiny/image_linear/oof_logits.csv",
        "runs/tiny/image_linear/test_logits.csv",
        "runs/tiny/ensemble/test_probs.csv",
        "runs/tiny/ensemble/thresholds.json",
    ):
        assert (run.root / rel).read_bytes() == (tiny_run.root / rel).read_bytes(), rel
    assert _files(run.root) == _files(tiny_run.root)

    # The stage table of `capfuse all`, in timings.csv under its command's name and on the predictor.
    timings = pd.read_csv(run.root / "runs" / "tiny" / "timings.csv")
    assert set(timings["command"]) == {"all"}
    assert list(timings["stage"]) == list(predictor.timings.frame()["stage"])
    assert {"folds", "train caption_linear", "stack", "thresholds", "submit"} <= set(timings["stage"])
    assert "train caption_linear" in predictor.timings.table()

    # The run's bundle is what `capfuse export` writes of the same run, and replays the submission.
    assert predictor.folder == run.root / "runs" / "tiny" / "bundle"
    args = ["--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet"]
    assert main(["export", *args, *TINY_RUN_ARGS, "--out", str(tmp_path / "exported")]) == 0
    strip = lambda path: {k: v for k, v in read_json(path / "bundle.json").items() if k not in api.EXPORT_MOMENT}
    assert strip(predictor.folder) == strip(tmp_path / "exported")
    want = read_submission(tiny_run.root / "submissions" / "tiny-latest.csv")
    pd.testing.assert_frame_equal(predictor.predict_folder(run.data).submission(), want)


@pytest.mark.slow
def test_a_saved_predictor_loads_and_predicts_the_same(tiny_run, refit, tmp_path):
    run, predictor = refit
    saved = predictor.save(tmp_path / "bundles" / "tiny")
    loaded = Predictor.load(saved, work_dir=predictor.work_dir)  # the encoders' features, reused
    want = read_submission(tiny_run.root / "submissions" / "tiny-latest.csv")
    pd.testing.assert_frame_equal(loaded.predict_folder(run.data).submission(), want)
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()) == sorted(
        [*loaded.record["files"], "bundle.json"]
    )
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left"

    # Saving again where this bundle is: kept as it is. A folder of something else: refused, untouched.
    stamp = (saved / "bundle.json").stat().st_mtime_ns
    assert predictor.save(saved) == saved and (saved / "bundle.json").stat().st_mtime_ns == stamp
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(BundleError, match="not a bundle"):
        predictor.save(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_second_fit_while_the_dataset_is_locked_raises_run_locked(refit):
    run, _ = refit
    submission = (run.root / "submissions" / "tiny-latest.csv").read_bytes()
    with dataset_lock(run.root / "runs" / "tiny", what="another run"), pytest.raises(RunLocked, match="another run"):
        _fit(run)
    assert (run.root / "submissions" / "tiny-latest.csv").read_bytes() == submission


@pytest.mark.slow
def test_a_changed_run_replaces_its_bundle_and_no_longer_matches(tiny_run, refit):
    """The identity above can fail: one threshold setting changed gives another submission, a new
    run bundle, and the predictor of the old bundle refuses to predict with the new files.

    It changes the module's run (a copy would embed the images again: the feature cache is keyed
    by the files' identity), so it comes last here."""
    run, before = refit
    after = _fit(run, "threshold.max_labels=1")
    new = read_submission(run.root / "submissions" / "tiny-latest.csv")
    assert not new.equals(read_submission(tiny_run.root / "submissions" / "tiny-latest.csv"))
    assert after.folder == before.folder and after.record["record_sha256"] != before.record["record_sha256"]
    assert after.record["thresholds"]["max_labels"] == 1
    with pytest.raises(BundleError, match="replaced"):
        before.predict_folder(run.data)
    assert not [p.name for p in (run.root / "runs" / "tiny").iterdir() if p.name.startswith(".bundle")]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A project folder with the configs and a dataset folder that is not a demo's name."""
    root = tmp_path / "project"
    shutil.copytree(Path(__file__).resolve().parents[1] / "configs", root / "configs")
    (root / "data" / "mine").mkdir(parents=True)
    (root / "data" / "mine" / "train.csv").write_text("ImageID,Labels,Caption\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"overrides": ["folds.k=banana"]}, ConfigError, "folds.k"),
        ({"overrides": ["folds.kk=3"]}, ConfigError, "kk"),
        ({"preset": "fastest"}, ConfigError, "the presets are: best, default, fast"),
        ({"preset": "best", "config": "configs/pipeline.yaml"}, ValueError, "not both"),
    ],
    ids=["bad-value", "unknown-key", "unknown-preset", "preset-and-config"],
)
def test_a_bad_config_raises_before_anything_is_written(dataset, kwargs, error, match):
    with pytest.raises(error, match=match):
        capfuse.fit("data/mine", root=dataset, **kwargs)
    assert not (dataset / "runs").exists() and not (dataset / "folds").exists()


def test_a_folder_that_is_no_dataset_is_named(dataset):
    with pytest.raises(FileNotFoundError, match="elsewhere/train.csv"):
        capfuse.fit("elsewhere", root=dataset)


class _Stop(Exception):
    pass


def test_time_limit_and_plan_reach_the_cli_as_its_options(dataset, monkeypatch):
    """``capfuse all --time-limit`` / ``--plan``: fit passes them, parsed as the CLI parses them."""
    seen = []

    def dispatch(args, then=None):
        seen.append(args)
        raise _Stop

    monkeypatch.setattr(api, "dispatch", dispatch)
    for kwargs in ({"time_limit": "1h30m"}, {"time_limit": 90}, {"time_limit": 5400.5}, {"plan": "plan.json"}):
        with pytest.raises(_Stop):
            capfuse.fit("data/mine", root=dataset, **kwargs)
    cli = build_parser()
    for got, argv in zip(seen, (["--time-limit", "1h30m"], ["--time-limit", "90"], ["--time-limit", "5400.5"])):
        want = cli.parse_args(["all", *argv])
        assert (got.time_limit, got.plan) == (want.time_limit, want.plan)
    assert seen[3].plan == str(dataset / "plan.json") and seen[3].time_limit is None
    with pytest.raises(ValueError, match="not allowed with"):
        capfuse.fit("data/mine", root=dataset, time_limit="60m", plan="plan.json")
    with pytest.raises(TypeError, match="time_limit"):
        capfuse.fit("data/mine", root=dataset, time_limit=[60])
