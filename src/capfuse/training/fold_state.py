"""What a fold folder's files say about its state: finished under which fingerprint, whether
this run takes it as its own, and whose mid-training state ``last.pt`` holds.

The trainer (``capfuse.training.cv``) asks these before it trains a fold, so that a fold of
another config, data, folds or time budget is trained again rather than taken as finished.
"""

from __future__ import annotations

from pathlib import Path

from capfuse.utils import deadline
from capfuse.utils.io import read_json, write_json
from capfuse.utils.log import log

RESUME_FILE = "resume.json"  # the fingerprint that the fold's last.pt (its mid-training state) belongs to


def claim_resume_state(fold_dir: Path, fp: str, what: str) -> None:
    """Keep ``last.pt`` only if it was saved under this run's fingerprint, then mark the fold as
    this run's. A fold left half-trained by an older config (or written by a job of an older
    run that outlived it) would otherwise resume from weights another config trained."""
    last = fold_dir / "last.pt"
    try:
        owner = read_json(fold_dir / RESUME_FILE).get("fingerprint")
    except (FileNotFoundError, ValueError, AttributeError):
        owner = None
    if last.exists() and owner != fp:
        last.unlink()
        log.info("%s: its last.pt was saved under another fingerprint; training the fold from the start", what)
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_json(fold_dir / RESUME_FILE, {"fingerprint": fp})


def accepted(done: str | None, fp: str, fold_dir: Path) -> str | None:
    """``fp`` when the finished fold's fingerprint ``done`` is this run's: the same, or the same
    with the clean stop of a time budget (``deadline.stop_suffix``) that this run allows: the
    stop a replayed plan names, or any while a budget's deadline is open. A stopped fold is not
    a run's without a budget: it trains again. Otherwise ``done`` as it is."""
    if done is None or done == fp:
        return done
    replayed = deadline.replayed_stop(deadline.stop_key(fold_dir))
    if replayed is not None:
        return fp if done == fp + deadline.stop_suffix(replayed) else done
    if deadline.remaining() is not None and done.startswith(fp + "+stop"):
        return fp
    return done


def fold_fingerprint(fold_dir: Path) -> str | None:
    """The fingerprint a finished fold was trained under: "" for a done.json without one
    (written before it was recorded), None when the fold is not finished."""
    try:
        record = read_json(fold_dir / "done.json")
    except FileNotFoundError:
        return None
    return str(record.get("fingerprint", "")) if isinstance(record, dict) else ""
