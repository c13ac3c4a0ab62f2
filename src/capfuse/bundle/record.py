"""``bundle.json``: sealed when written, and checked whole before a predictor trusts it.

A bundle is read on another machine, often long after it was written, by whatever capfuse is
installed there. So the reader trusts nothing it has not checked:

* the record itself is hashed (``record_sha256``, over its canonical JSON): thresholds, blend
  weights and class names are as much the model as the weight files are;
* every file in the folder is listed with its sha256, and nothing unlisted lies beside them, so
  no file the predictor reads escapes the check;
* every path the record names is relative and stays inside the bundle folder, symlinks resolved;
* its keys are exactly the ones this capfuse writes (a newer capfuse's key is refused, not
  dropped) and a bundle written by a newer capfuse version is refused;
* every encoder its models name is carried by an installed package, so an offline prediction
  never reaches for a model hub unless the caller allows it.

Each problem is one ``BundleError`` line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath

from capfuse import __version__
from capfuse.encoders.registry import ENCODERS
from capfuse.utils.io import read_json, sha256_file

BUNDLE_FILE = "bundle.json"
FORMAT = 2  # bump when a reader of an older bundle would misread a newer one
SEAL = "record_sha256"
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.@-]+")  # a model's name is a folder of the bundle
REQUIRED = ("format", "capfuse_version", "classes", "models", "second_level", "thresholds", "image_fallback", "files")
OPTIONAL = ("git_commit", "created", "dataset", "max_pixels", "cv", "fast", "pruning", SEAL)


class BundleError(ValueError):
    """A bundle that cannot be used as it is: missing, of another format, or altered."""


def record_digest(record: dict) -> str:
    """The sha256 of the record's canonical JSON, its own seal left out."""
    body = {k: v for k, v in record.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(record: dict) -> dict:
    return {**record, SEAL: record_digest(record)}


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split("+")[0].split("."))
    except ValueError:
        return (0,)


def inside(folder: Path, rel: str, where: str) -> Path:
    """``folder / rel`` for a path the record names, refused when it could leave the folder."""
    pure = PurePosixPath(str(rel))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in str(rel):
        raise BundleError(f"{where}: {rel!r} is not a plain path inside the bundle")
    path = folder / pure
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"{where}: {rel!r} resolves outside the bundle folder")
    return path


def named_paths(record: dict) -> list[tuple[str, str]]:
    """Every path the record names outside ``files``, with the key that names it."""
    out = [(f"models.{name}.config", info.get("config", "")) for name, info in record["models"].items()]
    for level, key in (
        (record["second_level"], "second_level"),
        ((record.get("fast") or {}).get("second_level"), "fast"),
    ):
        for k, fold in enumerate((level or {}).get("folds", [])):
            for j, part in enumerate(fold.get("classes", [])):
                if "booster" in part:
                    out.append((f"{key}.folds[{k}].classes[{j}].booster", f"second_level/{part['booster']}"))
    return out


def read_record(folder: Path, *, verify: bool = True) -> dict:
    """``folder/bundle.json``, checked as the module docstring says; ``verify`` also hashes the files."""
    where = folder / BUNDLE_FILE
    if not where.is_file():
        raise BundleError(f"{folder}: no {BUNDLE_FILE}; export one with `make export`")
    try:
        record = read_json(where)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise BundleError(f"{where}: a mapping expected, got {type(record).__name__}")
    if record.get("format") != FORMAT:
        raise BundleError(
            f"{where}: format {record.get('format')!r}, this capfuse reads {FORMAT}: export the run again with this capfuse"
        )
    made_by = record.get("capfuse_version", "?")
    if _version(made_by) > _version(__version__):
        raise BundleError(f"{where}: written by capfuse {made_by}, newer than this {__version__}: upgrade capfuse")
    missing = [k for k in REQUIRED if k not in record]
    unknown = sorted(set(record) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise BundleError(
            f"{where}: "
            + "; ".join(
                ([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])
            )
        )
    if SEAL not in record or record[SEAL] != record_digest(record):
        raise BundleError(f"{where}: its content does not match its {SEAL}; the bundle was altered")
    for name in record["models"]:
        if not PLAIN_NAME.fullmatch(str(name)) or name in (".", ".."):
            raise BundleError(f"{where}: model name {name!r} is not a plain name (letters, digits, _ . @ -)")
    files = record["files"]
    for rel in files:
        inside(folder, rel, f"{where}: files")
    for key, rel in named_paths(record):
        inside(folder, rel, f"{where}: {key}")
        if rel not in files:
            raise BundleError(f"{where}: {key} names {rel!r}, which the files list does not hash")
    if verify:
        for rel, digest in files.items():
            path = folder / rel
            if not path.is_file():
                raise BundleError(f"{path}: listed in {BUNDLE_FILE} but missing")
            if sha256_file(path) != digest:
                raise BundleError(f"{path}: its sha256 differs from {BUNDLE_FILE}'s; the bundle was altered")
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
        extra = sorted(present - set(files) - {BUNDLE_FILE})
        if extra:
            raise BundleError(
                f"{folder}: files not listed in {BUNDLE_FILE}: {extra[:5]}; a bundle holds only what it lists"
            )
    return record


def check_offline(name: str, settings, where: Path) -> None:
    """Refuse a model whose encoders no installed package carries, or whose config asks for the
    hub's weights (``weights: hub``) even of one a package carries: predicting would download them."""
    encoders = []
    if "image" in settings.inputs:
        encoders.append(("image", settings.image_encoder, settings.image_encoder.name in ENCODERS.names()))
    caption = getattr(settings, "caption_encoder", None)
    if caption is not None and "caption" in settings.inputs and settings.kind == "net":
        encoders.append(("caption", caption, caption.name in ENCODERS.names() or Path(caption.name).is_dir()))
    for what, spec, carried in encoders:
        if spec.weights == "hub" or (spec.weights != "none" and not carried):
            why = "asks for the hub's weights (weights: hub)" if carried else "is not carried by a package"
            raise BundleError(
                f"{where}: {name}'s {what} encoder {spec.name!r} {why}, so predicting would download it from a "
                "model hub; pass allow_hub=True to let it"
            )
