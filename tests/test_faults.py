"""Fault injection: the promises of the README's "Guarantees" section, proved on the tiny dataset.

Each run is a real ``capfuse`` process. A small driver wraps ``os.replace`` (every artefact is
written to a temporary file and renamed into place) and kills its own process with SIGKILL
just before the N-th rename whose target matches a pattern: the run dies exactly as a machine
losing power would, at a chosen point, with no Python cleanup. Then:

* a run killed while embedding, inside a fold, between two models and inside the stack stage,
  then run again, writes a submission byte-identical to an uninterrupted run's;
* two runs started at once on one dataset never both write: the second stops and names the
  first's PID, and the first's submission is the uninterrupted one;
* a disk that fills up while features are written ends the run with a clear error and leaves
  every earlier artefact as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "configs" / "pipeline.yaml"
# Two linear models and one small net (it checkpoints every epoch, so a fold can die halfway).
ARGS = [
    "--config",
    str(PIPELINE),
    "--quiet",
    "--set",
    "folds.k=3",
    "--set",
    "threshold.trials=20",
    "--set",
    "ensemble.stack.num_threads=1",
    "--set",
    "models=[caption_linear,image_linear,caption_mlp]",
    "--set",
    "train.epochs=4",
]

DRIVER = """
import errno, fnmatch, os, signal, sys, time
pattern, nth = os.environ.get("KILL_AT"), int(os.environ.get("KILL_NTH", "1"))
real_replace, seen = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    if pattern and fnmatch.fnmatch(str(dst), pattern):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a power cut
    if os.environ.get("PAUSE_AT") and fnmatch.fnmatch(str(dst), os.environ["PAUSE_AT"]):
        release = os.environ["PAUSE_UNTIL"]  # a long stage, as long as the test wants it
        while not os.path.exists(release):
            time.sleep(0.05)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
if os.environ.get("DISK_FULL_AT"):  # the disk is full for arrays written under this pattern
    real_fallocate = os.posix_fallocate

    def fallocate(fd, offset, length):
        if fnmatch.fnmatch(os.readlink(f"/proc/self/fd/{fd}"), os.environ["DISK_FULL_AT"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fallocate(fd, offset, length)

    os.posix_fallocate = fallocate
from capfuse.cli import main
sys.exit(main(sys.argv[1:]))
"""


def capfuse(root: Path, *args: str, env: dict | None = None, wait: bool = True):
    """Run ``capfuse`` in a fresh process under ``root``; the Popen when ``wait`` is False."""
    driver = root / "driver.py"
    if not driver.exists():
        driver.write_text(DRIVER, encoding="utf-8")
    cmd = [sys.executable, str(driver), *args, "--root", str(root)]
    full_env = {**os.environ, "CAPFUSE_QUIET": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


# Re-derived on every run, not artefacts: the lock and the validator's verdict cache (keyed by
# inode, so a copied project rechecks its images once).
NOT_ARTEFACTS = {".lock", "image_checks.json", "validation.json", "validation.txt"}


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every artefact under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in NOT_ARTEFACTS
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, bytes]:
    """An uninterrupted ``capfuse all`` on the tiny dataset: its root and its submission's bytes."""
    from capfuse.data.demo import PRESETS, make_demo

    root = tmp_path_factory.mktemp("faults_reference")
    make_demo(root / "data" / "tiny", **PRESETS["tiny"], seed=0)
    code, out = capfuse(root, "all", "--data", "data/tiny", *ARGS)
    assert code == 0, out
    return root, (root / "submissions" / "tiny-latest.csv").read_bytes()


def fresh_copy(reference_root: Path, dest: Path) -> Path:
    """The reference's dataset and its encoders' ONNX exports (keyed by encoder, size and
    weights, not by the data) in a new project folder: nothing else it computed."""
    shutil.copytree(reference_root / "data", dest / "data")
    shutil.copytree(reference_root / "runs" / "tiny" / "cache" / "onnx", dest / "runs" / "tiny" / "cache" / "onnx")
    return dest


# (where the run dies, the artefact whose rename it does not live to see, which such rename)
KILL_POINTS = [
    ("while embedding", "*/runs/tiny/cache/*.npy", 1),
    ("inside a fold of the net, after its second epoch", "*/runs/tiny/caption_mlp/fold1/last.pt", 2),
    ("between two models", "*/runs/tiny/image_linear/metrics.json", 1),
    ("inside the stack stage", "*/runs/tiny/ensemble/*", 1),
]


def test_killed_runs_resume_to_a_byte_identical_submission(reference, tmp_path):
    ref_root, ref_sub = reference
    root = fresh_copy(ref_root, tmp_path)
    for where, pattern, nth in KILL_POINTS:
        code, out = capfuse(root, "all", "--data", "data/tiny", *ARGS, env={"KILL_AT": pattern, "KILL_NTH": str(nth)})
        assert code == -signal.SIGKILL, f"the run was meant to die {where} ({pattern}), but exited {code}:\n{out}"
        assert not (root / "submissions" / "tiny-latest.csv").exists()
    code, out = capfuse(root, "all", "--data", "data/tiny", *ARGS)
    assert code == 0, out
    assert "done earlier, skipped" in out  # the resumed run reused finished folds, it did not start over
    assert (root / "submissions" / "tiny-latest.csv").read_bytes() == ref_sub
    # The temporary files the kills left behind were cleaned by the stages that own them.
    assert not list((root / "runs").rglob(".*.tmp"))


def test_two_concurrent_runs_never_mix_their_outputs(reference):
    # In the reference project itself (it ends as it began): one model is trained again while a
    # second run starts on the same dataset.
    root, ref_sub = reference
    shutil.rmtree(root / "runs" / "tiny" / "caption_mlp")
    release = root / "release"
    first = capfuse(
        root,
        "train",
        "--data",
        "data/tiny",
        *ARGS,
        wait=False,
        env={"PAUSE_AT": "*/runs/tiny/caption_mlp/fold0/last.pt", "PAUSE_UNTIL": str(release)},
    )
    try:
        lock = root / "runs" / "tiny" / ".lock"
        deadline = time.time() + 300
        while not (root / "runs" / "tiny" / "caption_mlp" / "fold0").exists():  # the first run is mid-training
            assert first.poll() is None and time.time() < deadline, first.communicate()[0]
            time.sleep(0.1)
        assert lock.read_text().startswith(f"{first.pid}\n")
        code, out = capfuse(root, "train", "--data", "data/tiny", *ARGS)
        assert code == 2 and f"PID {first.pid}" in out, out
    finally:
        release.touch()
    out_first, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out_first
    release.unlink()
    code, out = capfuse(root, "infer", "--data", "data/tiny", *ARGS)
    assert code == 0, out
    assert (root / "submissions" / "tiny-latest.csv").read_bytes() == ref_sub


def test_a_full_disk_is_a_clear_error_and_earlier_artefacts_survive(reference, tmp_path):
    ref_root, ref_sub = reference
    root = tmp_path / "project"
    shutil.copytree(ref_root, root)
    # The feature cache is gone (a user cleared it to make room): the features must be written
    # again, and the disk is full when their arrays are reserved.
    shutil.rmtree(root / "runs" / "tiny" / "cache")
    before = tree_digest(root / "runs")
    code, out = capfuse(root, "train", "--data", "data/tiny", *ARGS, env={"DISK_FULL_AT": "*/runs/tiny/cache/*"})
    assert code == 2, out
    assert "no room on the disk" in out and "Traceback" not in out, out
    after = tree_digest(root / "runs")
    # timings.csv is the log of every command: it gains the failed command's rows, if it can.
    before.pop("tiny/timings.csv", None)
    assert {k: after.get(k) for k in before} == before, "an earlier artefact changed"
    assert (root / "submissions" / "tiny-latest.csv").read_bytes() == ref_sub
    assert not list((root / "runs").rglob(".*.tmp")), "the failed write left a temporary file"
