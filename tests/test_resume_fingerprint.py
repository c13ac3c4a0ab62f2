"""A fold resumes from ``last.pt`` only when it was saved under the run's own fingerprint: a fold
left half-trained by another config (or by a job of an older run that outlived it) starts over."""

from __future__ import annotations

import logging

from capfuse.training.fold_state import RESUME_FILE, claim_resume_state
from capfuse.utils.io import read_json, write_json


def _fold(tmp_path, owner: str | None):
    fold = tmp_path / "fold0"
    fold.mkdir()
    (fold / "last.pt").write_bytes(b"weights of some config")
    if owner is not None:
        write_json(fold / RESUME_FILE, {"fingerprint": owner})
    return fold


def test_last_pt_of_another_fingerprint_is_not_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="capfuse")
    fold = _fold(tmp_path, "old-config")
    claim_resume_state(fold, "new-config", "m fold 0")
    assert not (fold / "last.pt").exists() and "another fingerprint" in caplog.text
    assert read_json(fold / RESUME_FILE)["fingerprint"] == "new-config"


def test_last_pt_without_an_owner_is_not_resumed(tmp_path):
    fold = _fold(tmp_path, None)
    claim_resume_state(fold, "new-config", "m fold 0")
    assert not (fold / "last.pt").exists()


def test_last_pt_of_this_run_is_resumed(tmp_path):
    fold = _fold(tmp_path, "same")
    claim_resume_state(fold, "same", "m fold 0")
    assert (fold / "last.pt").read_bytes() == b"weights of some config"
