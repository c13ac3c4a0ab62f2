"""One run at a time per dataset: ``runs/<dataset>/.lock``, held with ``fcntl.flock``.

Two runs writing the same run folders mix their artefacts (a fold of one config beside the
fingerprint of another) or remove each other's. The kernel releases a flock when its holder
exits, however it exits, so the lock of a killed run is simply taken over by the next one:
the PID written inside only names the holder in the message, it is never trusted to decide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from capfuse.utils.log import log

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another process holds the dataset's lock."""


def holder(path: Path) -> str:
    """What the lock file says about its holder (``PID 123: capfuse train``), for messages."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition("\n")
    if not pid:
        return "PID unknown"  # the holder took the lock but has not written its PID yet
    return f"PID {pid}" + (f": {what}" if what else "")


@contextlib.contextmanager
def dataset_lock(runs: Path, *, wait: bool = False, what: str = "") -> Iterator[Path]:
    """Hold ``runs/.lock`` for the block; ``RunLocked`` naming the holder when it is taken,
    or, with ``wait``, block until the holder is done."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / LOCK_FILE
    with _locked(
        path,
        wait=wait,
        what=what,
        taken=lambda: (
            f"{path}: another capfuse run ({holder(path)}) is writing to {runs}; "
            "wait for it to finish, or pass --wait to start when it does"
        ),
    ):
        yield path


@contextlib.contextmanager
def fold_lock(path: Path, *, what: str = "") -> Iterator[Path]:
    """Hold the lock file ``path`` of one (model, fold) for the block: one writer per fold folder,
    whichever process or machine runs it. A (model, fold) job still running from an interrupted
    run (a Dask worker does not stop when the client does) keeps it, and a second writer of the
    same fold stops with ``RunLocked`` naming it instead of writing into the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(
        path,
        wait=False,
        what=f"{what} on {socket.gethostname()}",
        taken=lambda: (
            f"{path.parent.name}/{path.name}: this fold is being trained by another process "
            f"({holder(path)}), perhaps a job of an interrupted run still running on a worker; stop it "
            "(or let it finish), then run again"
        ),
    ):
        yield path


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool, what: str, taken) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunLocked(taken()) from None
            log.info("%s is held by %s; waiting for it to finish", path, holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{what}\n".encode(), 0)
        try:
            yield
        finally:
            # The file stays (removing it would let a waiter lock an unlinked file while a
            # newcomer locks a new one); emptied, it names no holder.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def hold_folder(path: Path) -> Iterator[None]:
    """Hold an flock on the folder ``path`` for the block, so that ``folder_abandoned`` tells other
    processes its writer is still at work (children forked inside the block hold it too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def folder_abandoned(path: Path) -> bool:
    """True when no process holds ``path``'s flock (``hold_folder``): its writer has exited,
    however it exited. A folder that cannot be opened is not judged abandoned."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
