"""What a run folder is, where it may lie, and the one way capfuse removes one.

Model and dataset names become folder names under ``runs/<dataset>/``. A name with a slash,
``..`` or an absolute path would put a run anywhere on disk, and a config change would then
remove that place wholesale. So a name is a plain name, its folder (symlinks resolved) lies
inside the folder meant to hold it, and a folder is removed only when it holds the
``fingerprint.json`` the trainer writes into every run folder: a folder without one was not
written by capfuse and is left alone.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

PLAIN_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
FINGERPRINT_FILE = "fingerprint.json"
# The ``capfuse`` key of fingerprint.json: it marks the file as ours and says its layout.
# Format 0 (no key, ``{"fingerprint": <sha256>}`` alone) is what runs before it wrote.
FINGERPRINT_FORMAT = 1
# What the fingerprint hashes of a run's config (the ``scheme`` key of fingerprint.json):
# "resolved" hashes the resolved, typed settings (capfuse.training.cv.fingerprint_config), so
# a default written out in a YAML file or left to the schema gives the same fingerprint. A file
# without the key is of the scheme before it, "raw", which hashed the merged YAML dict as
# spelt; such a run folder is retrained once.
FINGERPRINT_SCHEME = "resolved"
RAW_SCHEME = "raw"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class NotOurs(ValueError):
    """A path capfuse will not write into or remove: not a plain name, outside its home, or not a run of ours."""


def check_name(name: object, what: str) -> str:
    """``name`` if it is a plain name (letters, digits, ``_ . @ -``; not ``.`` or ``..``)."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise NotOurs(
            f"{what} {name!r} is not a plain name: use letters, digits and _ . @ - only "
            "(no slash, no spaces, not '.' or '..')"
        )
    return name


def child_dir(parent: Path, name: str, what: str) -> Path:
    """``parent / name`` for a plain ``name`` whose folder, symlinks resolved, lies inside ``parent``."""
    check_name(name, what)
    path = parent / name
    check_inside(path, parent)
    return path


def check_inside(path: Path, home: Path) -> None:
    """Refuse ``path`` unless it resolves (symlinks followed) to a place strictly inside ``home``."""
    real, base = Path(path).resolve(), Path(home).resolve()
    if real == base or not real.is_relative_to(base):
        raise NotOurs(
            f"{path} resolves to {real}, outside {base}: a symlink there points away; "
            "remove the link or use another name"
        )


def fingerprint_record(fingerprint: str) -> dict:
    """The content of a run folder's ``fingerprint.json``."""
    return {"capfuse": FINGERPRINT_FORMAT, "scheme": FINGERPRINT_SCHEME, "fingerprint": fingerprint}


def _our_record(folder: Path) -> dict | None:
    """A run folder's fingerprint.json when capfuse wrote it; None otherwise."""
    path = Path(folder) / FINGERPRINT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    fp = record.get("fingerprint")
    if not isinstance(fp, str) or not _SHA256.fullmatch(fp):
        return None
    version = record.get("capfuse")
    if version is None:
        # Format 0 held the fingerprint and nothing else; anything more is someone else's file.
        return record if set(record) == {"fingerprint"} else None
    return record if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else None


def read_fingerprint(folder: Path) -> str | None:
    """The fingerprint of a capfuse run folder; None when ``folder`` holds no fingerprint.json of ours."""
    record = _our_record(folder)
    return None if record is None else record["fingerprint"]


def read_scheme(folder: Path) -> str | None:
    """What a capfuse run folder's fingerprint hashed (``FINGERPRINT_SCHEME`` or ``RAW_SCHEME``);
    None when ``folder`` holds no fingerprint.json of ours."""
    record = _our_record(folder)
    return None if record is None else str(record.get("scheme", RAW_SCHEME))


def remove_run(folder: Path, home: Path) -> None:
    """Remove the run folder ``folder``, refusing a symlink, anything outside ``home``, and a
    folder without capfuse's ``fingerprint.json``."""
    folder = Path(folder)
    if folder.is_symlink():
        raise NotOurs(f"{folder} is a symlink (to {folder.resolve()}); capfuse removes only its own run folders")
    check_inside(folder, home)
    if not folder.is_dir() or read_fingerprint(folder) is None:
        raise NotOurs(
            f"{folder} holds no capfuse {FINGERPRINT_FILE}: it was not written by capfuse, so it is "
            "not removed; move it away or use another model name"
        )
    shutil.rmtree(folder)
