"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

# `make test` runs two pytest workers (pytest-xdist). Each one, and every run it starts, takes one
# thread: two workers of two threads on a 2-core machine spend their time waiting on each other's
# spinning OpenMP threads. Set before any test imports torch, which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "configs" / "pipeline.yaml"

# A reduced pipeline: two fast base models (one per modality) over 3 folds, a short threshold
# study. It writes every artefact the report and the notebooks read, in about half a minute.
TINY_RUN_ARGS = (
    "--set",
    "folds.k=3",
    "--set",
    "threshold.trials=20",
    "--set",
    "ensemble.stack.num_threads=1",
    "--set",
    "models=[caption_linear,image_linear]",
)


@dataclass(frozen=True)
class TinyRun:
    root: Path  # project folder holding folds/, runs/, submissions/
    data: Path  # the tiny dataset, root/data/tiny
    config: Path

    def copy(self, dest: Path, share_data: bool = False) -> TinyRun:
        """A private copy to change artefacts in without touching the shared run.

        ``share_data``: the copy's dataset is a link to this run's, so its images are the same
        files and the copied feature cache serves them (a copied image is a new file to the
        cache, which embeds it again). Only for a copy whose test leaves the dataset alone."""
        shared = self.data.relative_to(self.root)
        ignore = (lambda folder, names: names if Path(folder) == self.data else []) if share_data else None
        shutil.copytree(self.root, dest, symlinks=True, ignore=ignore)
        if share_data:
            link = dest / shared
            link.unlink() if link.is_symlink() else link.rmdir()  # a copy of a copy holds the link already
            link.symlink_to(self.data.resolve(), target_is_directory=True)
        return TinyRun(dest, dest / shared, self.config)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One finished run of ``capfuse all`` on the tiny dataset, made once per session.

    Treat it as read-only; use ``tiny_run.copy(tmp_path)`` to add or remove artefacts.
    """
    from capfuse.cli import main
    from capfuse.data.demo import PRESETS, make_demo

    root = tmp_path_factory.mktemp("tiny_run")
    data = root / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=0)
    code = main(["all", "--data", str(data), "--root", str(root), "--config", str(PIPELINE), "--quiet", *TINY_RUN_ARGS])
    assert code == 0, "the tiny pipeline run failed; see the log above"
    return TinyRun(root, data, PIPELINE)


def write_optional_tables(runs: Path) -> None:
    """Small ablation, pseudo-round and label-ratio tables in the stages' formats, so that every
    report section and notebook has something to show without running those (slow) stages."""
    (runs / "ablation.csv").write_text(
        "variant,group,change,score,mean_f1,delta,map,gap_at_10,minutes,seed_note\n"
        "fusion_crossattention,reference,the reference model,CV,0.82,0.0,0.835,0.88,1.43,a\n"
        "no_cross_attention,fusion,cross-attention off,CV,0.81,-0.01,0.83,0.87,1.2,b\n"
        "bce,loss,plain BCE,CV,0.812,-0.008,0.83,0.87,1.4,c\n"
        "weighted_blend,second level,log-loss weighted blend,nested CV,0.826,0.006,0.84,0.89,0.2,d\n"
        "per_class_thresholds,thresholds,per-class thresholds,nested CV,0.824,0.0,,,0.1,e\n",
        encoding="utf-8",
    )
    (runs / "pseudo_rounds.csv").write_text(
        "base_model,model,round,cv_mean_f1,cv_map,note,class,pseudo_pos,pseudo_neg,precision,recall\n"
        "fusion_crossattention,fusion_crossattention,0,0.80,0.82,labelled data only,all,,,,\n"
        "fusion_crossattention,fusion_crossattention@r1,1,0.81,0.83,CV +0.0100 vs round 0,1,30.0,400.0,0.9,0.8\n"
        "fusion_crossattention,fusion_crossattention@r1,1,0.81,0.83,CV +0.0100 vs round 0,all,120.0,5000.0,0.88,0.7\n",
        encoding="utf-8",
    )
    (runs / "label_ratios.csv").write_text(
        "percent,model,labelled_rows,cv_mean_f1_without,cv_map_without,cv_mean_f1_round1,cv_mean_f1_with,best_round,"
        "rounds_run,gain,pseudo_precision_round1\n"
        "10.0,fusion_crossattention,8,0.50,0.45,0.52,0.52,1,2,0.02,0.7\n"
        "100.0,fusion_crossattention,80,0.60,0.55,0.61,0.61,1,2,0.01,0.9\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="session")
def tiny_run_full(tiny_run, tmp_path_factory) -> TinyRun:
    """A copy of ``tiny_run`` that also holds ablation, pseudo-round and label-ratio tables."""
    run = tiny_run.copy(tmp_path_factory.mktemp("tiny_run_full") / "project")
    write_optional_tables(run.root / "runs" / "tiny")
    return run


def export_args(run: TinyRun, out: Path) -> list[str]:
    common = ["--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet"]
    return ["export", *common, *TINY_RUN_ARGS, "--out", str(out)]


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """``capfuse export`` of the tiny run, made once per session (from a copy: export logs its
    timings into runs/). Treat it as read-only; copy it to alter it."""
    from capfuse.cli import main

    run = tiny_run.copy(tmp_path_factory.mktemp("tiny_bundle") / "project")
    out = run.root.parent / "bundle"
    assert main(export_args(run, out)) == 0
    return out


@pytest.fixture(scope="session")
def shared_onnx(tiny_run, tmp_path_factory) -> Path:
    """One folder of encoder ONNX exports for every prediction of the session, seeded with the
    tiny run's own: an export is keyed by the encoder, its size and its weights' checksum, so a
    prediction finds the graph it needs instead of exporting it again."""
    folder = tmp_path_factory.mktemp("shared") / "onnx"
    shutil.copytree(tiny_run.root / "runs" / tiny_run.data.name / "cache" / "onnx", folder)
    return folder


@pytest.fixture
def predict_work(shared_onnx, tmp_path) -> Path:
    """A fresh ``--cache`` / ``work_dir`` for a prediction whose encoder exports are the session's."""
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)
    (work / "cache" / "onnx").symlink_to(shared_onnx, target_is_directory=True)
    return work
