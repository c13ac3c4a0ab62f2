"""The zeroshot stage (MKT-style open vocabulary): held-out classes, ZSL/GZSL scores, and the deployed projector.

``run_zeroshot`` holds N classes out as unseen: their labels never reach training, their
captions do (a caption is the teacher, not a label). For every evaluation fold of
``folds/<dataset>.csv`` a projector is trained on the other folds' train rows and on the test
rows (captions only) and embeds the held-out fold's images, which it never saw in any form.
Scores on those images go to ``runs/<dataset>/zeroshot.csv`` beside a seeded random scorer and
two references that read the held-out image's caption (this task has one at test time too).
A final projector, trained on every row and every class's labels, is saved to
``runs/<dataset>/zeroshot/`` for ``capfuse zeroshot-score``, ``embeddings`` and ``search``.

``run_zeroshot_score`` scores any user-given label names on any folder of images.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.data.dataset import load_dataset
from capfuse.data.names import DISCOVERY_VERSION
from capfuse.paths import Paths
from capfuse.results.measured import write_measured
from capfuse.results.tables import results_dir
from capfuse.utils.io import read_json, sha256_file, write_csv, write_text
from capfuse.utils.log import log, stage
from capfuse.zeroshot.cv import cross_fitted, evaluation_setup, label_text
from capfuse.zeroshot.evaluate import pick_unseen
from capfuse.zeroshot.inputs import embed_image_files, list_images, load_features
from capfuse.zeroshot.io import META_FILE, load_model, model_dir, save_model
from capfuse.zeroshot.settings import ZeroShotSettings
from capfuse.zeroshot.text import CaptionSpace
from capfuse.zeroshot.train import embed_rows, train_projection

# Bump when training or evaluation changes what a run produces, so stale runs are redone.
STAGE_VERSION = 1


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode() if not isinstance(part, bytes) else part)
        h.update(b"\x00")
    return h.hexdigest()


def run_zeroshot(paths: Paths, cfg: dict, *, force: bool = False, quiet: bool | None = None) -> pd.DataFrame:
    """Evaluate on held-out folds, write ``zeroshot.csv``, save the deployed projector; returns the table."""
    settings = ZeroShotSettings.from_config(cfg)
    seed = int(cfg.get("seed", 42))
    out_csv, folder = paths.runs / "zeroshot.csv", model_dir(paths)
    with stage("zeroshot", paths.dataset):
        start = time.perf_counter()
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        names, Y = list(ds.val.classes.names), ds.Y
        feats, checksums = load_features(ds, settings, quiet=quiet)
        unseen = pick_unseen(Y, names, settings.unseen, min_positives=settings.min_positives, seed=seed)
        parts = [STAGE_VERSION, settings.to_dict(), seed, checksums, sha256_file(paths.folds_file), names, Y.tobytes()]
        if ds.names is not None and ds.names.discovered:
            # Each fold's prompts come from names discovered on its training rows: how, counts too.
            parts.append(f"discovered:v{DISCOVERY_VERSION}:{ds.names.settings}")
        fingerprint = _fingerprint(*parts)
        meta_file = folder / META_FILE
        if (
            not force
            and out_csv.exists()
            and meta_file.exists()
            and read_json(meta_file).get("fingerprint") == fingerprint
        ):
            log.info("zeroshot is up to date (%s); --force retrains", meta_file)
            table = pd.read_csv(out_csv)
            log.info("\n%s", table.to_string(index=False, float_format="%.4f"))
            return table
        log.info("unseen classes (labels held out of training): %s", ", ".join(names[c] for c in unseen))
        space = CaptionSpace.load(settings.caption_encoder)
        # Discovered names: each evaluation fold's prompts come from its own training rows; the
        # deployed projector's from every training row.
        discovery, test_rows, eval_folds = evaluation_setup(ds, folds, settings)
        text = label_text(space, settings.prompts, names, discovery)
        n_train = len(ds.train_ids)
        fitted = cross_fitted(
            feats,
            Y,
            folds,
            eval_folds,
            test_rows,
            unseen,
            settings,
            seed,
            space,
            names,
            discovery,
            list(ds.val.train["Caption"]),
            text=None if discovery else text,
            train=train_projection,
        )
        table, per_class, rows_eval, logs = fitted.table, fitted.per_class, fitted.rows, fitted.logs
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "per_class.csv", per_class)
        write_csv(out_csv, table)
        log.info(
            "zero-shot on %d held-out images, unseen: %s\n%s",
            len(rows_eval),
            ", ".join(names[c] for c in unseen),
            table.to_string(index=False, float_format="%.4f"),
        )

        # The deployed projector: every row, every class's labels (no class is held out any more).
        rows = np.concatenate([np.arange(n_train), test_rows])
        labelled = rows < n_train
        labels = np.zeros((len(rows), len(names)), np.float32)
        labels[labelled] = Y[rows[labelled]]
        net, history = train_projection(
            feats, rows, settings, seed=seed, labels=labels, labelled=labelled, label_text=text
        )
        minutes = (time.perf_counter() - start) / 60
        write_text(
            folder / "log.jsonl", "".join(json.dumps(r) + "\n" for r in logs + [{"fold": "all", "history": history}])
        )
        save_model(
            folder,
            net,
            {
                "dataset": paths.dataset,
                "fingerprint": fingerprint,
                "seed": seed,
                "settings": settings.to_dict(),
                "img_dim": int(next(iter(feats.pooled.values())).shape[1]),
                "text_dim": int(text.shape[1]),
                "image_encoder": settings.image_encoder,
                "caption_encoder": settings.caption_encoder,
                "classes": {
                    "ids": list(ds.class_ids),
                    "names": names,
                    "source": ds.names.source if ds.names else "file",
                },
                "evaluation": {
                    "unseen": [names[c] for c in unseen],
                    "folds": eval_folds,
                    "images": int(len(rows_eval)),
                },
                "trained_on": {"rows": int(len(rows)), "labelled_rows": int(labelled.sum()), "label_classes": names},
                "minutes": round(minutes, 2),
            },
        )
        log.info("wrote %s and %s (%.1f min)", out_csv, folder, minutes)
        return table


def run_zeroshot_score(
    model_folder: Path, images: Path, labels: list[str], *, top: int = 5, out: Path | None = None
) -> pd.DataFrame:
    """Score label names on every image of a folder with a saved projector.

    Returns one row per image file (``image`` then one column per label, cosine similarity);
    a file that cannot be decoded is reported and gets empty scores.
    """
    labels = [lab.strip() for lab in labels if lab.strip()]
    if not labels:
        raise ValueError('give at least one label name, e.g. --labels "cat,dog,red bus"')
    if len(set(labels)) != len(labels):
        raise ValueError(f"label names repeat: {labels}")
    net, meta = load_model(model_folder)
    settings = ZeroShotSettings.from_config({"zeroshot": meta["settings"]})
    files = list_images(images)
    if not files:
        raise FileNotFoundError(f"{images} holds no image files ({', '.join(('jpg', 'png', '...'))})")
    views = ("orig", "hflip") if settings.tta else ("orig",)
    feats, ok, problems = embed_image_files(files, meta["image_encoder"], views=views)
    for p in problems:
        log.warning("not scored: %s", p)
    emb = embed_rows(net, feats, np.arange(len(ok)), tta=settings.tta)
    text = CaptionSpace.load(meta["caption_encoder"]).labels(labels, settings.prompts)
    scores = np.full((len(files), len(labels)), np.nan, np.float32)
    scores[ok] = emb @ text.T
    table = pd.DataFrame(scores, columns=labels)
    table.insert(0, "image", [f.name for f in files])
    if out is not None:
        write_csv(out, table, float_format="%.5f")
    k = max(1, min(int(top), len(labels)))
    for name, row in zip(table["image"], scores):
        if np.isnan(row).all():
            print(f"{name}: (unreadable)")
            continue
        best = np.argsort(-row, kind="stable")[:k]
        print(f"{name}: " + ", ".join(f"{labels[j]} {row[j]:.3f}" for j in best))
    return table


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    table = run_zeroshot(paths, cfg, force=args.force, quiet=quiet)
    print(table.to_string(index=False, float_format="%.4f"))
    results = results_dir(getattr(args, "results", None))
    if results is not None:
        facts = {"dataset": paths.dataset, "config": args.config}
        write_measured(results, "zeroshot", table, root=paths.root, name=paths.dataset, facts=facts)
    return 0


def cli_score(args) -> int:
    """``capfuse zeroshot-score``: needs no dataset, only a saved projector and a folder of images."""
    folder = Path(args.model) if args.model else model_dir(Paths(Path(args.data), Path(args.root).resolve()))
    run_zeroshot_score(
        folder, Path(args.images), args.labels.split(","), top=args.top, out=Path(args.out) if args.out else None
    )
    return 0
