"""One sample from its seed, and the dataset on disk.

Every sample is drawn from its own generator seeded by ``(seed, split, index)``
(``generate_sample``), so the output is byte-identical whatever the number of worker
processes. ``make_demo`` writes the train and test sets in the COMP5329 layout into a
temporary sibling folder and renames it into place; a stamp file (``STAMP_NAME``) records the
parameters and ``GENERATOR_VERSION``, so a second call with the same ones is a no-op (``make
data`` is idempotent). ``make_unlabelled`` writes an extra unlabelled folder from its own seed
stream for pseudo-label rounds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from capfuse.data.demo.captions import make_caption
from capfuse.data.demo.drawing import render_scene
from capfuse.data.demo.objects import RENDER
from capfuse.data.demo.scenes import (
    CLASS_ID,
    CLASS_NAMES,
    CLASSES,
    GENERATOR_VERSION,
    SPLIT_CODE,
    forced_class,
    sample_labels,
)
from capfuse.data.demo.shifted import split_look
from capfuse.utils.io import read_json, write_json, write_text
from capfuse.utils.lock import folder_abandoned, hold_folder

STAMP_NAME = ".demo.json"
RECUR_CODE = 7  # the seed stream of the near-copies (apart from every split's own)


def generate_sample(
    seed: int, split: str, index: int, size: int, shift: str | None = None
) -> tuple[Image.Image, list[int], str]:
    """Sample ``index`` of ``split``: image, label ids (ascending), caption. Pure in its arguments.

    ``shift`` (the shifted preset): each split draws the objects in its own looks
    (``capfuse.data.demo.shifted``); the labels and scene are the same draws as without it.
    """
    rng, scene, labels, img, info = _draw(seed, split, index, size, shift)
    return img, sorted(CLASS_ID[c] for c in labels), make_caption(rng, scene, info)


def _draw(seed: int, split: str, index: int, size: int, shift: str | None) -> tuple:
    """Sample ``index``'s scene, labels and image, and the generator it drew them from (the
    caption is drawn from it next)."""
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    scene, labels = sample_labels(rng, forced_class(split, index))
    img, info = render_scene(rng, scene, labels, size, split_look(shift, split))
    return rng, scene, labels, img, info


def recurring_source(seed: int, index: int, n_train: int, recur: float) -> int | None:
    """The earlier training image that training image ``index`` shows again, or None: with
    ``recur`` > 0 the last ``recur`` share of the training rows are near-copies of the others."""
    n_source = n_train - int(round(recur * n_train))
    if recur <= 0 or index < n_source or n_source < 1:
        return None
    return int(np.random.default_rng([seed, RECUR_CODE, index]).integers(n_source))


def near_copy(seed: int, index: int, source: int, size: int, shift: str | None) -> tuple[Image.Image, list[int], str]:
    """Training image ``source`` seen again, as a second photo of the same objects would show
    them: the same drawing under a small crop, mirror and exposure change, with a caption of its
    own from the same grammar; its labels are the source's."""
    _, scene, labels, img, info = _draw(seed, "train", source, size, shift)
    own = np.random.default_rng([seed, RECUR_CODE, index, 1])
    side = int(round(size * own.uniform(0.85, 0.95)))
    x, y = (int(v) for v in own.integers(0, size - side + 1, 2))
    img = img.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
    if own.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    gain = own.uniform(0.85, 1.15)
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) * gain, 0, 255).astype(np.uint8))
    return img, sorted(CLASS_ID[c] for c in labels), make_caption(own, scene, info)


def _work(task: tuple) -> tuple[list[int], str]:
    seed, split, index, size, path, photo, shift, source = task
    if source is None:
        img, labels, caption = generate_sample(seed, split, index, size, shift)
    else:
        img, labels, caption = near_copy(seed, index, source, size, shift)
    if photo is not None:
        # Rendered square, stored at the photo size: the decoder then pays for COMP5329's
        # 640x480 pixels, which is what throughput figures at competition size must include.
        img = img.resize(photo, Image.BICUBIC)
    img.save(path, "JPEG", quality=RENDER["jpeg_quality"])
    return labels, caption


def remove_dead_staging(out: Path) -> int:
    """Remove the staging folders (``.<name>.tmp-<pid>``) that killed generators of ``out`` left:
    a competition-sized set is gigabytes of JPEGs. A folder whose writer still holds it
    (``staging_folder``'s flock) is kept, so two generators never remove each other's work; the
    PID in the name is never trusted to decide. Returns how many were removed."""
    removed = 0
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        if path.is_dir() and not path.is_symlink() and folder_abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh ``.<name>.tmp-<pid>/data/`` beside ``out``, held (flock) while the block writes
    it; the block renames it into place, or it is removed on the way out. Folders that killed
    generators left are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "data").mkdir(parents=True)
        with hold_folder(tmp):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _params(
    n_train: int,
    n_test: int,
    size: int,
    seed: int,
    photo: tuple[int, int] | None = None,
    shift: str | None = None,
    recur: float = 0.0,
) -> dict:
    params = dict(generator_version=GENERATOR_VERSION, n_train=n_train, n_test=n_test, size=size, seed=seed)
    # Only when set, so that the stamps of datasets written before the options still match.
    optional = {"photo": list(photo) if photo is not None else None, "shift": shift or None, "recur": recur or None}
    return params | {k: v for k, v in optional.items() if v is not None}


def _summary(params: dict, train_labels: list[list[int]], captions: list[str], seconds: float) -> dict:
    counts = {name: 0 for name in CLASS_NAMES}
    id_to_name = {cid: name for cid, name in CLASSES}
    for labels in train_labels:
        for cid in labels:
            counts[id_to_name[cid]] += 1
    n = max(1, len(train_labels))
    return dict(
        **params,
        class_counts=counts,
        class_freq={k: round(v / n, 4) for k, v in counts.items()},
        mean_labels=round(sum(len(x) for x in train_labels) / n, 3),
        captions_with_comma=sum("," in c for c in captions),
        captions_with_quote=sum('"' in c for c in captions),
        seconds=round(seconds, 2),
    )


def make_demo(
    out_dir: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 800,
    size: int = 256,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    photo: tuple[int, int] | None = None,
    shift: str | None = None,
    recur: float = 0.0,
) -> dict:
    """Write the demo dataset into ``out_dir`` (COMP5329 layout) and return a summary.

    ``photo`` (width, height): scenes are rendered at ``size`` and stored resized to it.
    ``shift`` (``"disjoint"``: the shifted preset): train and test draw the objects in disjoint
    looks (``capfuse.data.demo.shifted``). ``recur`` (the recurring preset): this share of the
    training images are near-copies of the other training images (``near_copy``), as photos of
    the same objects recur in a real set; the test images never recur.

    A stamp (``.demo.json``) records the parameters; when it matches, nothing is regenerated
    (``skipped`` is True in the summary) unless ``force``. A folder that exists without a stamp
    is not ours, so it is never overwritten unless ``force``.
    """
    if n_train < 1 or n_test < 0 or size < 16 or seed < 0 or not 0.0 <= recur < 1.0:
        raise ValueError(
            "need n_train >= 1, n_test >= 0, size >= 16, seed >= 0, 0 <= recur < 1 "
            f"(got {n_train}, {n_test}, {size}, {seed}, {recur})"
        )
    start = time.perf_counter()
    out = Path(out_dir)
    split_look(shift, "test")  # an unknown shift fails here, before any work
    params = _params(n_train, n_test, size, seed, photo, shift, recur)
    stamp = out / STAMP_NAME
    if out.exists() and not force:
        if stamp.exists():
            saved = read_json(stamp)
            if saved.get("params") == params:
                summary = dict(saved["summary"], skipped=True, seconds=round(time.perf_counter() - start, 3))
                return summary
        elif any(out.iterdir()):
            raise FileExistsError(f"{out} exists and was not made by the demo generator; pass force=True to replace it")

    workers = max(1, int(workers or os.cpu_count() or 1))
    with staging_folder(out) as tmp:
        tasks = [
            (
                seed,
                "train",
                i,
                size,
                str(tmp / "data" / f"{i}.jpg"),
                photo,
                shift,
                recurring_source(seed, i, n_train, recur),
            )
            for i in range(n_train)
        ]
        tasks += [
            (seed, "test", i, size, str(tmp / "data" / f"{n_train + i}.jpg"), photo, shift, None) for i in range(n_test)
        ]
        if workers == 1 or len(tasks) < 16:
            results = [_work(t) for t in tasks]
        else:
            # Each task seeds its own generator, so the pool's scheduling cannot change a byte.
            with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(
                min(workers, len(tasks))
            ) as pool:
                results = pool.map(_work, tasks, chunksize=max(1, min(32, len(tasks) // (4 * workers))))
        train, test = results[:n_train], results[n_train:]
        ids_test = [f"{n_train + i}.jpg" for i in range(n_test)]
        write_text(
            tmp / "train.csv",
            "ImageID,Labels,Caption\n"
            + "".join(f"{i}.jpg,{' '.join(map(str, lab))},{cap}\n" for i, (lab, cap) in enumerate(train)),
        )
        write_text(
            tmp / "test.csv", "ImageID,Caption\n" + "".join(f"{iid},{cap}\n" for iid, (_, cap) in zip(ids_test, test))
        )
        write_text(
            tmp / "test_labels.csv",
            "ImageID,Labels\n" + "".join(f"{iid},{' '.join(map(str, lab))}\n" for iid, (lab, _) in zip(ids_test, test)),
        )
        write_text(tmp / "classes.csv", "id,name\n" + "".join(f"{cid},{name}\n" for cid, name in CLASSES))
        summary = _summary(params, [lab for lab, _ in train], [c for _, c in results], time.perf_counter() - start)
        write_json(tmp / STAMP_NAME, {"params": params, "summary": summary})
        # Swap in: the old folder (if any) is moved aside first because a directory rename
        # cannot replace a non-empty directory.
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    summary = dict(summary, skipped=False, seconds=round(time.perf_counter() - start, 2), workers=workers)
    return summary


def make_unlabelled(
    out_dir: str | os.PathLike,
    n: int,
    size: int = 256,
    seed: int = 0,
    captions: bool = True,
    workers: int | None = None,
) -> dict:
    """An extra folder of ``n`` unlabelled images for pseudo-label rounds (``data.unlabelled``).

    Layout: ``data/u<i>.jpg`` and ``unlabelled.csv`` (``ImageID`` and, with ``captions``, a
    ``Caption`` column). The labels go to ``unlabelled_labels.csv``, which only the pseudo-label
    report reads, like the demo's ``test_labels.csv``. Rows come from their own seed stream,
    so the train and test sets of the same seed do not change. Written to a temporary folder
    and renamed into place.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 unlabelled images, got {n}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists; remove it first")
    with staging_folder(out) as tmp:
        tasks = [(seed, "unlabelled", i, size, str(tmp / "data" / f"u{i}.jpg"), None, None, None) for i in range(n)]
        workers = max(1, int(workers or os.cpu_count() or 1))
        with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(min(workers, n)) as pool:
            results = pool.map(_work, tasks, chunksize=max(1, min(32, n // (4 * workers))))
        ids = [f"u{i}.jpg" for i in range(n)]
        if captions:
            write_text(
                tmp / "unlabelled.csv", "ImageID,Caption\n" + "".join(f"{i},{c}\n" for i, (_, c) in zip(ids, results))
            )
        else:
            write_text(tmp / "unlabelled.csv", "ImageID\n" + "".join(f"{i}\n" for i in ids))
        write_text(
            tmp / "unlabelled_labels.csv",
            "ImageID,Labels\n" + "".join(f"{i},{' '.join(map(str, lab))}\n" for i, (lab, _) in zip(ids, results)),
        )
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    return {"n": n, "captions": captions, "folder": str(out)}
