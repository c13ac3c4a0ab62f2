"""The validate stage: check a dataset once and print the report (``runs/<dataset>/validation.txt``)."""

from __future__ import annotations

from capfuse.data.dataset import load_dataset
from capfuse.utils.log import log


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    ds = load_dataset(paths, cfg, quiet=quiet)
    print((paths.runs / "validation.txt").read_text(encoding="utf-8"))
    log.info(
        "usable train rows %d, quarantined %d, test rows %d",
        len(ds.val.train),
        len(ds.val.quarantine),
        len(ds.val.test),
    )
    return 0
