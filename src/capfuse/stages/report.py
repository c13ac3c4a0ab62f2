"""The report stage: ``runs/<dataset>/report/index.html``, one self-contained page per run.

It reads the artefacts the other stages wrote (never retrains or refits) and writes the page
atomically, so a reader never opens half a report.
"""

from __future__ import annotations

from pathlib import Path

from capfuse.data.dataset import load_dataset
from capfuse.paths import Paths
from capfuse.report.run import Run
from capfuse.report.sections import build_html
from capfuse.utils.io import write_text
from capfuse.utils.log import log, stage


def report_path(paths: Paths) -> Path:
    return paths.runs / "report" / "index.html"


def run_report(paths: Paths, cfg: dict, *, quiet: bool | None = None) -> Path:
    with stage("report", paths.dataset):
        run = Run(paths=paths, cfg=cfg, ds=load_dataset(paths, cfg, quiet=quiet))
        # build_html checks the required artefacts before plotting anything: a clear error
        # naming the missing file and the command that writes it.
        out = write_text(report_path(paths), build_html(run))
        log.info("wrote %s (%.0f kB)", out, out.stat().st_size / 1024)
        return out


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    print(f"Report: {run_report(paths, cfg, quiet=quiet)}")
    return 0
