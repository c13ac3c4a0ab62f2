"""The stack and thresholds stages: ``make stack`` and ``make thresholds`` (see ``capfuse.ensemble.second_level``)."""

from __future__ import annotations

from capfuse.data.dataset import load_dataset
from capfuse.ensemble.second_level import fit_stack, fit_thresholds
from capfuse.shift import read_shift, shift_report


def run_stack(paths, cfg: dict, *, quiet: bool | None = None) -> dict:
    """Blends and a LightGBM stacker on the base models' OOF logits; keeps the best. The choice
    reads the dataset's shift report (``runs/<dataset>/shift.json``), measured first when missing
    (seconds, from the vectors training cached)."""
    ds = load_dataset(paths, cfg, quiet=quiet)
    shift = read_shift(paths, ds)
    if shift is None:
        shift_report(paths, cfg, ds, quiet=quiet)
        shift = read_shift(paths, ds)
    return fit_stack(paths, cfg, ds, shift)


def run_thresholds(paths, cfg: dict, *, storage: str | None = None, quiet: bool | None = None) -> dict:
    """Global and per-class thresholds on the kept OOF probabilities, in-sample and nested."""
    return fit_thresholds(paths, cfg, load_dataset(paths, cfg, quiet=quiet), storage=storage)


def cli_stack(args, paths, cfg: dict, quiet: bool) -> int:
    run_stack(paths, cfg, quiet=quiet)
    return 0


def cli_thresholds(args, paths, cfg: dict, quiet: bool) -> int:
    run_thresholds(paths, cfg, storage=args.storage, quiet=quiet)
    return 0
