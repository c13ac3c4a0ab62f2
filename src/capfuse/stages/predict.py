"""The predict stage: a bundle (``make export``) + a folder → a checked submission and a
probabilities CSV. The folder is in the test layout (``test.csv`` + ``data/``) or holds images,
with captions from ``--captions`` (ImageID, Caption). Reads no training data and no ``runs/``."""

from __future__ import annotations

from pathlib import Path

from capfuse.bundle import Predictor
from capfuse.bundle.inputs import read_image_folder
from capfuse.submission import write_submission
from capfuse.utils.io import write_csv
from capfuse.utils.log import log, stage


def cli(args) -> int:
    data = Path(args.data)
    out = Path(args.out)
    name = data.resolve().name
    with stage("predict", name):
        fast, folds = getattr(args, "fast", False), getattr(args, "folds", None)
        predictor = Predictor.load(args.bundle, work_dir=args.cache, fast=fast, folds=folds)
        if (data / "test.csv").exists():
            pred = predictor.predict_folder(data)
        else:
            images, captions, ids = read_image_folder(data, args.captions)
            pred = predictor.predict(images, captions, ids=ids)
        record = predictor.record
        manifest = {
            "bundle": str(args.bundle),
            "bundle_git_commit": record.get("git_commit"),
            "bundle_dataset": record.get("dataset"),
            "data_dir": str(data),
            "models": sorted(predictor.models),
            "folds": {n: predictor.folds[n] for n in sorted(predictor.models)},
            "fast": fast,
            "second_level": predictor.second_level["candidate"],
            "threshold": predictor.thresholds["kind"],
            "rows": len(pred.ids),
            "rows_without_image": int((~pred.image_ok).sum()),
            "rows_flagged": len(pred.flagged()),
            "flags_csv": f"{name}-latest-flags.csv",
        }
        written = write_submission(pred.submission(), pred.ids, pred.class_ids, out, name, manifest)
        probs = write_csv(out / f"{name}-latest-probs.csv", pred.probabilities())
        flags = write_csv(out / f"{name}-latest-flags.csv", pred.flagged())
    for path in (*written.values(), probs, flags):
        log.info("wrote %s", path)
    print(
        f"\nSubmission: {written['latest_csv']}  probabilities: {probs}  ({len(pred.ids)} rows, "
        f"{manifest['rows_flagged']} flagged: {flags}; {manifest['rows_without_image']} predicted from the caption)"
    )
    return 0
