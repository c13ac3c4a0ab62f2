"""Atomic, durable artefact writes: a temporary file in the same folder, fsynced, then ``os.replace``.

An interrupted stage therefore leaves either the old artefact or the new one, never half of
one, and ``make`` never mistakes a truncated file for a finished stage. The fsyncs make that
hold across a power cut too, not only a killed process. What a killed stage does leave is its
temporary files (``.<name>.<random>.tmp``, memory-mapped arrays of gigabytes among them);
``remove_stale_tmp`` clears them at the start of the stage that owns the folder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The package's logger by name, not through capfuse.utils.log: that module records stage timings
# with capfuse.utils.timing, which writes its CSV through this one.
log = logging.getLogger("capfuse")


# Any temporary file this process makes is newer than this: files older than it were left by
# an earlier process (see remove_stale_tmp). Set on import, before any write of this module.
_LOADED = time.time()
_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")  # what atomic_path's mkstemp names look like
_PROC_STATUS = Path("/proc/self/status")


class DiskFullError(OSError):
    """No room on the disk for an artefact; the message says which file, how much it needs and how much is free."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``durable``: fsync the file before the rename and the folder after it, so that after a crash
    ``path`` holds the whole new artefact or the whole old one (a rename can otherwise reach the
    disk before the data it points at). Off only for scratch files nobody relies on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 (right for a file only this process should see while it is
        # written); a finished artefact gets the mode any other file of the user would get.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    # Read-only is enough on POSIX (fsync flushes the file's pages whichever descriptor asks);
    # Windows flushes only through a descriptor open for writing.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (the folder's entry); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows: folders cannot be opened, and NTFS journals the rename
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise  # EINVAL etc.: this filesystem does not sync folders; an I/O error must surface
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, without changing it where the system can tell it (Linux /proc)."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return _swapped_umask()


_UMASK_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _swapped_umask() -> int:
    # The only portable way to read the umask is to set another one and put it back; a file
    # another thread creates in between gets the one set. 0o077 makes that the safe side
    # (private, where 0 would make it world-writable), and reading it once, at first use and
    # under a lock, keeps the window to one moment; a later os.umask call is not seen here.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", durable=durable)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, df, *, durable: bool = True, **kwargs) -> Path:
    """Write a pandas DataFrame atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path, durable=durable) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def write_npy(path: str | os.PathLike, array: np.ndarray, *, durable: bool = True) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


def allocate_npy(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new C-order ``.npy`` file at ``path``, its blocks reserved on disk, memory-mapped for writing.

    ``np.lib.format.open_memmap`` only extends the file: it stays sparse, the disk fills while
    the rows are written, and the process dies of SIGBUS with nothing said. Reserving the blocks
    first turns a full disk into a ``DiskFullError`` naming the file, before any work is done.
    """
    path, dtype, shape = Path(path), np.dtype(dtype), tuple(int(n) for n in shape)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    nbytes = dtype.itemsize * math.prod(shape)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)  # what np.save writes for such arrays
        offset = fh.tell()
        fh.flush()
        _reserve(fh.fileno(), offset, nbytes, path)
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _reserve(fd: int, offset: int, nbytes: int, path: Path) -> None:
    if nbytes == 0:
        return
    try:
        try:
            os.posix_fallocate(fd, offset, nbytes)
            return
        except AttributeError:
            pass  # macOS, Windows: no posix_fallocate
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
        # This filesystem cannot reserve blocks: check the free space, then extend the file.
        if shutil.disk_usage(path.parent).free < nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.ftruncate(fd, offset + nbytes)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        free = shutil.disk_usage(path.parent).free
        limit = " (or past this process's file-size limit, ulimit -f)" if exc.errno == errno.EFBIG else ""
        raise DiskFullError(
            exc.errno,
            f"{_artefact(path)}: no room on the disk{limit} for this array: it needs "
            f"{_size(nbytes)}, and {path.parent} has {_size(free)} free; free some "
            "space or put runs/ on a larger disk",
        ) from exc


def _artefact(path: Path) -> Path:
    """The artefact an atomic_path temporary file will become (itself for any other path)."""
    m = _TMP.match(path.name)
    return path.with_name(m["name"]) if m else path


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed runs left under ``folder``; return the bytes freed.

    A file is stale when it is named like ``atomic_path``'s (``.<name>.<random>.tmp``), was last
    written before this process loaded this module, and no live process holds it open or
    mapped (checked through /proc where there is one). Call it at the start of the stage that
    owns ``folder``: the per-dataset lock keeps a second run out of it, and every temporary file
    this process makes is newer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    candidates = []
    for root, _dirs, files in os.walk(folder):  # does not follow folder symlinks out of ``folder``
        for name in files:
            if not _TMP.match(name):
                continue
            path = Path(root, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink() and st.st_mtime < _LOADED:
                candidates.append((path, st))
    if not candidates:
        return 0
    held = _held_inodes()
    freed = removed = 0
    for path, st in candidates:
        if st.st_ino in held:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            freed, removed = freed + st.st_size, removed + 1
    if removed:
        log.info(
            "removed %d stale temporary files (%s) left by an interrupted run in %s", removed, _size(freed), folder
        )
    return freed


def _held_inodes() -> set[int]:
    """Inodes that live processes hold open or mapped (Linux; empty elsewhere).

    Inodes alone, without devices: /proc/<pid>/maps and stat() disagree on the device of files
    on overlay filesystems, and a rare match with another disk's file only keeps a stale file.
    """
    held: set[int] = set()
    proc = Path("/proc")
    if not (proc / "self" / "maps").exists():
        return held
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's
            for fd in os.scandir(proc / pid / "fd"):
                with contextlib.suppress(OSError):
                    held.add(os.stat(fd.path).st_ino)
        with contextlib.suppress(OSError):
            # A mapping outlives its descriptor (numpy closes the file once the array is mapped).
            with open(proc / pid / "maps", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    fields = line.split(maxsplit=5)
                    if len(fields) >= 5 and fields[4] != "0":
                        held.add(int(fields[4]))
    return held


def stat_key(st: os.stat_result) -> str:
    """What tells a changed file from an unchanged one without reading it.

    Size and mtime alone miss a replacement that keeps both (``cp -p``, ``rsync -a``); such a
    copy still gets a new ctime (nothing can set it) and, when renamed into place, a new inode.
    The price: a dataset copied or restored elsewhere counts as changed, and its caches are redone.
    """
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_reprs(*parts: Any) -> str:
    """sha256 over each part's ``repr`` in order: the key of values that have no file (a config,
    a list of captions) in run fingerprints and feature checksums."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
