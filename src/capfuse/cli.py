"""``capfuse``: one command whose subcommands mirror the Make targets.

    capfuse data     --data data/demo [--preset default|tiny|large] [--unlabelled N [--no-captions]]
    capfuse validate --data DIR
    capfuse folds    --data DIR --config configs/pipeline.yaml [--force]
    capfuse embed    --data DIR --config configs/pipeline.yaml [--only NAME ...]
    capfuse train    --data DIR --config configs/pipeline.yaml [--only NAME ...] [--jobs N | --scheduler ADDRESS] [--threads T]
    capfuse ratios   --data DIR --config configs/pipeline.yaml
    capfuse ablate   --data DIR --config configs/ablation.yaml [--results results]
    capfuse stack    --data DIR --config configs/pipeline.yaml
    capfuse thresholds --data DIR --config configs/pipeline.yaml [--storage URL]
    capfuse infer    --data DIR --config configs/pipeline.yaml [--storage URL] [--results results]
    capfuse all      --data DIR --config configs/pipeline.yaml [--results results]
    capfuse zeroshot --data DIR [--config configs/zeroshot.yaml] [--force]
    capfuse zeroshot-score --images DIR --labels "cat,dog,red bus" [--model runs/<dataset>/zeroshot] [--out CSV]
    capfuse embeddings --data DIR [--model zeroshot|backbone]
    capfuse search   --data DIR (--image ID_OR_PATH | --text "a dog on a bus") [--k 8]
    capfuse report   --data DIR --config configs/pipeline.yaml
    capfuse shift    --data DIR --config configs/pipeline.yaml
    capfuse export   --data DIR --config configs/pipeline.yaml [--out bundles/NAME]
    capfuse predict  --bundle bundles/NAME --data DIR [--captions CSV] [--out predictions]
    capfuse config   show NAME [--set KEY=VALUE ...] | list [--markdown]
    capfuse results collect --run runs/<dataset> [--preset NAME] [--results results]
    capfuse results render [--results results] [--readme README.md] [--check]

Paths, devices and flags are resolved here and passed down; nothing is computed at import. The
options themselves are defined in `capfuse.cli_options`.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capfuse.cli_options import build_parser
from capfuse.config import ConfigError, load_config
from capfuse.data.problems import DataError
from capfuse.paths import Paths
from capfuse.utils.io import DiskFullError
from capfuse.utils.lock import RunLocked, dataset_lock
from capfuse.utils.log import log, quiet_default, setup_logging
from capfuse.utils.timing import recording

TIMINGS_FILE = "timings.csv"


def _context(args):
    paths = Paths(data_dir=Path(args.data), root=Path(args.root).resolve())
    cfg = load_config(args.config, args.overrides) if hasattr(args, "config") else {}
    if "kind" in cfg and not cfg.get("name"):
        # A model config given directly is a one-model pipeline named after its file, as the
        # train stage names it; the stack stage needs that name to know the pipeline's model.
        cfg["name"] = Path(args.config).stem
    if args.strict:
        cfg.setdefault("data", {})["strict"] = True
    quiet = True if args.quiet else quiet_default()
    if quiet:
        os.environ["CAPFUSE_QUIET"] = "1"  # progress bars deep in the library follow the flag too
    return paths, cfg, quiet


# Command → the stage's CLI wrapper, as "module:function". Stage modules import torch, timm,
# transformers and LightGBM (20 s on a cold 2-core machine), so a command imports its stage when
# it runs: `capfuse --help` and `capfuse data` never pay for the others.
@dataclass(frozen=True)
class Command:
    handler: str  # "module:function"; called as f(args, paths, cfg, quiet), or f(args) without a dataset
    dataset: bool = True  # resolves --data/--config and holds runs/<dataset>/.lock while it runs
    # "module:function" called like the handler once the command's timings are written to
    # runs/<dataset>/timings.csv: what reads a whole run's time (its results file) runs there.
    after: str | None = None


COMMANDS: dict[str, Command] = {
    "data": Command("capfuse.stages.data:cli_data", dataset=False),
    "faulty": Command("capfuse.stages.data:cli_faulty", dataset=False),
    "config": Command("capfuse.stages.config:cli", dataset=False),
    "validate": Command("capfuse.stages.validate:cli"),
    "folds": Command("capfuse.stages.folds:cli"),
    "embed": Command("capfuse.stages.embed:cli"),
    "train": Command("capfuse.stages.train:cli"),
    "ratios": Command("capfuse.stages.ratios:cli"),
    "ablate": Command("capfuse.stages.ablate:cli"),
    "stack": Command("capfuse.stages.ensemble:cli_stack"),
    "thresholds": Command("capfuse.stages.ensemble:cli_thresholds"),
    "infer": Command("capfuse.stages.infer:cli", after="capfuse.stages.infer:write_results_file"),
    "export": Command("capfuse.stages.export:cli"),
    "predict": Command("capfuse.stages.predict:cli", dataset=False),
    "report": Command("capfuse.stages.report:cli"),
    "shift": Command("capfuse.stages.shift:cli"),
    "names": Command("capfuse.stages.names:cli"),
    "zeroshot": Command("capfuse.stages.zeroshot:cli"),
    "zeroshot-score": Command("capfuse.stages.zeroshot:cli_score", dataset=False),
    "embeddings": Command("capfuse.stages.embeddings:cli_embeddings"),
    "search": Command("capfuse.stages.embeddings:cli_search"),
    "results": Command("capfuse.stages.results:cli", dataset=False),
}
# Commands that run several stages in one process, under one lock, in this order.
SEQUENCES: dict[str, tuple[str, ...]] = {"all": ("folds", "train", "infer")}


def _handler(name: str) -> Callable[..., int]:
    return _function(COMMANDS[name].handler)


def _function(spec: str) -> Callable:
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # `capfuse bench` has its own options (capfuse.stages.bench); imported here for the same
        # reason as the stages of COMMANDS.
        from capfuse.stages.bench import main as bench_main  # noqa: PLC0415 (a stage, imported when its command runs)

        setup_logging("INFO")
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        # One log line per problem (a bad value, an unknown key, an override that does not
        # parse): each names its key and file, and no traceback buries them.
        for problem in str(exc).splitlines():
            log.error("%s", problem)
        return 2
    except (DataError, FileNotFoundError, ValueError, RunLocked, DiskFullError) as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # A full disk wherever it strikes (a log, a model file, a sqlite study): one line. Every
        # artefact is written atomically, so what finished is whole and a rerun resumes after it.
        log.error(
            "no space left on the device while writing %s: free some space and run the same command again "
            "(finished artefacts are kept, the rest is redone)",
            exc.filename or "a file",
        )
        return 2


def _locked(paths, args):
    """``runs/<dataset>/.lock`` for the whole command: every command that resolves a dataset
    writes into ``runs/<dataset>/`` (the validation report at least), so each one holds it, and
    ``make all``, several capfuse commands in a row, takes and releases it once per command.

    A second run stops by default rather than waiting: two runs on one dataset are most often a
    mistake (a second terminal, a forgotten background job), and a silent wait would hide it and
    then redo the work; ``--wait`` queues deliberately.

    Under torchrun every rank runs this command; rank 0 holds the lock for the whole job (it
    alone writes run folders), and the other ranks must not wait on their own job's lock.
    When rank 0 stops because another run holds it, torchrun stops the other ranks.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return dataset_lock(paths.runs, wait=args.wait, what=f"capfuse {args.command} --data {args.data}")


def dispatch(args, then: Callable[..., None] | None = None) -> int:
    """Run the command ``args`` holds (a namespace of `build_parser`) and return its exit code;
    errors are raised, for `main` to turn into one line. ``then(paths, cfg, quiet, timings)``
    runs last, still under the dataset's lock: ``capfuse.fit`` exports the run it trained there."""
    steps = SEQUENCES.get(args.command, (args.command,))
    if not COMMANDS[steps[0]].dataset:
        return _handler(steps[0])(args)
    # The stages first: the components they build (losses, heads, ...) register their parameters
    # with the config schema, so the config is checked against them as it loads.
    handlers = [_handler(step) for step in steps]
    # A time budget (--time-limit) counts from here: the folds and the config's loading too.
    args.started = time.monotonic()
    paths, cfg, quiet = _context(args)
    with _locked(paths, args):
        # Where the time went: runs/<dataset>/timings.csv gains the command's rows (rank 0 only:
        # it alone writes into runs/), and the stage table closes the log.
        csv = paths.runs / TIMINGS_FILE if int(os.environ.get("RANK", "0")) == 0 else None
        with recording(args.command, csv) as timings:
            for handler in handlers:
                code = handler(args, paths, cfg, quiet)
                if code:
                    return code
        if timings.rows:
            log.info("where the time went (%s):\n%s", paths.runs / TIMINGS_FILE, timings.table())
        for step in steps:
            if COMMANDS[step].after and int(os.environ.get("RANK", "0")) == 0:
                _function(COMMANDS[step].after)(args, paths, cfg, quiet)
        if then is not None:
            then(paths, cfg, quiet, timings)
    return 0


_dispatch = dispatch  # what `main` calls: one name to replace when a test fakes the whole command


# -- open vocabulary (MKT-style) and embeddings for search (MuMIC-style) ---------------------------
if __name__ == "__main__":
    sys.exit(main())
