"""The shift stage: ``capfuse shift`` measures how far the test set is from the training set.

``capfuse infer`` (so ``make all``) writes the same report from the vectors training cached;
this command runs it alone, and on a dataset not trained yet it embeds the images for the
config's first model that reads an image vector (minutes on a CPU), so a new competition's
shift shows before any model trains.
"""

from __future__ import annotations

from pathlib import Path

from capfuse.data.dataset import load_dataset
from capfuse.shift import shift_report
from capfuse.training.selection import select_models


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    ds = load_dataset(paths, cfg, quiet=quiet)
    summary = shift_report(paths, cfg, ds, quiet=quiet, models=select_models(cfg, Path(args.config)))
    print(f"\nShift report: {summary['file']}")
    print(summary["warning"] or "No shift beyond what random splits of the training rows show.")
    return 0
