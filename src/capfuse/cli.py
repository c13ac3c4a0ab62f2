"""``capfuse``: one command whose subcommands mirror the Make targets.

    capfuse data     --data data/demo [--preset default|tiny|large] [--unlabelled N [--no-captions]]
    capfuse validate --data DIR
    capfuse folds    --data DIR --config configs/pipeline.yaml [--force]
    capfuse embed    --data DIR --config configs/pipeline.yaml [--only NAME ...]
    capfuse train    --data DIR --config configs/pipeline.yaml [--only NAME ...] [--jobs N | --scheduler ADDRESS] [--threads T]
    capfuse ratios   --data DIR --config configs/pipeline.yaml
    capfuse ablate   --data DIR --config configs/ablation.yaml
    capfuse stack    --data DIR --config configs/pipeline.yaml
    capfuse thresholds --data DIR --config configs/pipeline.yaml [--storage URL]
    capfuse infer    --data DIR --config configs/pipeline.yaml [--storage URL]
    capfuse all      --data DIR --config configs/pipeline.yaml
    capfuse zeroshot --data DIR [--config configs/zeroshot.yaml] [--force]
    capfuse zeroshot-score --images DIR --labels "cat,dog,red bus" [--model runs/<dataset>/zeroshot] [--out CSV]
    capfuse embeddings --data DIR [--model zeroshot|backbone]
    capfuse search   --data DIR (--image ID_OR_PATH | --text "a dog on a bus") [--k 8]
    capfuse report   --data DIR --config configs/pipeline.yaml
    capfuse export   --data DIR --config configs/pipeline.yaml [--out bundles/NAME]
    capfuse predict  --bundle bundles/NAME --data DIR [--captions CSV] [--out predictions]

Paths, devices and flags are resolved here and passed down; nothing is computed at import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capfuse.config import ConfigError, load_config
from capfuse.data.problems import DataError
from capfuse.paths import Paths
from capfuse.utils.io import DiskFullError
from capfuse.utils.lock import RunLocked, dataset_lock
from capfuse.utils.log import log, quiet_default, setup_logging
from capfuse.utils.timing import recording

DEFAULT_CONFIG = "configs/pipeline.yaml"
TIMINGS_FILE = "timings.csv"


def _common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    p.add_argument("--data", default="data/demo", help="dataset folder in the COMP5329 layout (default: data/demo)")
    p.add_argument("--root", default=".", help="project folder holding folds/, runs/, submissions/ (default: .)")
    if config:
        p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline or model config (default: {DEFAULT_CONFIG})")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value, e.g. --set folds.k=3 (repeatable)",
        )
    p.add_argument("--strict", action="store_true", help="fail on any bad train row instead of quarantining it")
    p.add_argument(
        "--wait",
        action="store_true",
        help="when another run holds runs/<dataset>/.lock, wait for it instead of stopping",
    )
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars (default when CI=true)")
    p.add_argument("--log-level", default="INFO")


def _engine_options(p: argparse.ArgumentParser) -> None:
    """Where the train stage's (model, fold) jobs run (capfuse.training.jobs)."""
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="train N (model, fold) jobs at once, each with cores // N threads (default: 1, serial)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="send the (model, fold) jobs to the Dask scheduler at ADDRESS, e.g. tcp://host:8786; "
        "its workers must see the same runs/ and data folders",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="torch and BLAS threads of each fold, serial or job (default: torch's own serially, "
        "cores // N with --jobs N); a run gives the same bytes with any --jobs at the same T",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capfuse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="generate the bundled demo dataset (COMP5329 layout)")
    p.add_argument("--data", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument(
        "--preset",
        default=None,
        choices=["default", "tiny", "large"],
        help="size preset (default: tiny for a folder named 'tiny', else default)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        metavar="N",
        help="also write N unlabelled images to <data>-unlabelled/ for pseudo-label rounds",
    )
    p.add_argument("--no-captions", action="store_true", help="the unlabelled images come without captions")
    p.add_argument("--log-level", default="INFO")

    # Listed for --help only: main() hands `capfuse bench ...` to capfuse.stages.bench, options and all.
    sub.add_parser(
        "bench",
        help="speed benchmarks: embedding throughput, stacking + thresholds at 30k rows (`capfuse bench --help`)",
        add_help=False,
    )

    p = sub.add_parser("faulty", help="generate a small dataset that holds every data fault the validator knows")
    p.add_argument("--data", default="data/faulty")
    p.add_argument("--log-level", default="INFO")

    p = sub.add_parser("validate", help="check a dataset and write the validation report")
    _common(p)

    p = sub.add_parser("folds", help="write multilabel-stratified folds to folds/<dataset>.csv")
    _common(p)
    p.add_argument("--force", action="store_true", help="rewrite an existing fold file")

    p = sub.add_parser("embed", help="cache the frozen encoders' features that the configured models read")
    _common(p)
    p.add_argument("--only", nargs="+", default=None, help="cache only what these models of the config read")

    p = sub.add_parser("train", help="train every configured model over every fold")
    _common(p)
    p.add_argument("--only", nargs="+", default=None, help="train only these models of the config")
    _engine_options(p)

    p = sub.add_parser(
        "ratios", help="label-ratio mode: CV at p %% of the labels, without and with pseudo-label rounds"
    )
    _common(p)

    p = sub.add_parser("ablate", help="train the ablation variants and write runs/<dataset>/ablation.{csv,md}")
    _common(p)
    p.set_defaults(config="configs/ablation.yaml")

    storage_help = (
        "Optuna storage URL for the threshold study (default: sqlite under runs/<dataset>/ensemble/); "
        "workers pointing at one RDB URL tune one study together"
    )
    p = sub.add_parser("stack", help="blends and a LightGBM stacker on the base models' OOF logits; keep the best")
    _common(p)

    p = sub.add_parser("thresholds", help="global and per-class (Optuna) thresholds, with nested-CV estimates")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)

    p = sub.add_parser("infer", help="stack, thresholds and the checked submission with its manifest")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)

    p = sub.add_parser("export", help="a finished run as a self-contained bundle folder for `capfuse predict`")
    _common(p)
    p.add_argument("--out", default=None, help="bundle folder to write (default: bundles/<dataset>-<timestamp>)")
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="keep only the best K second-level models by drop-one nested CV, refitting the blend on their OOF",
    )

    p = sub.add_parser("predict", help="predict a folder (test.csv + data/) with an exported bundle, offline")
    p.add_argument("--bundle", required=True, help="bundle folder written by `capfuse export`")
    p.add_argument(
        "--data", required=True, help="folder in the COMP5329 test layout (test.csv and data/), or of images"
    )
    p.add_argument("--captions", default=None, help="for a folder of images: a CSV of ImageID, Caption")
    p.add_argument(
        "--cache",
        default=None,
        help="keep the encoders' exports and features here between runs (default: a temporary folder)",
    )
    p.add_argument(
        "--out", default="predictions", help="where the submission and probabilities go (default: predictions)"
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="the bundle's fast variant: caption-only models, one fold each, no image embedded (make bench: speed, cost)",
    )
    p.add_argument("--folds", type=int, default=None, help="use only the first N folds of every model")
    p.add_argument("--log-level", default="INFO")

    p = sub.add_parser("report", help="write the self-contained HTML run report runs/<dataset>/report/index.html")
    _common(p)

    p = sub.add_parser("all", help="folds, train and infer in one go")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)
    _engine_options(p)
    _add_zeroshot_commands(sub)
    _add_names_command(sub)
    return parser


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


COMMANDS: dict[str, Command] = {
    "data": Command("capfuse.stages.data:cli_data", dataset=False),
    "faulty": Command("capfuse.stages.data:cli_faulty", dataset=False),
    "validate": Command("capfuse.stages.validate:cli"),
    "folds": Command("capfuse.stages.folds:cli"),
    "embed": Command("capfuse.stages.embed:cli"),
    "train": Command("capfuse.stages.train:cli"),
    "ratios": Command("capfuse.stages.ratios:cli"),
    "ablate": Command("capfuse.stages.ablate:cli"),
    "stack": Command("capfuse.stages.ensemble:cli_stack"),
    "thresholds": Command("capfuse.stages.ensemble:cli_thresholds"),
    "infer": Command("capfuse.stages.infer:cli"),
    "export": Command("capfuse.stages.export:cli"),
    "predict": Command("capfuse.stages.predict:cli", dataset=False),
    "report": Command("capfuse.stages.report:cli"),
    "names": Command("capfuse.stages.names:cli"),
    "zeroshot": Command("capfuse.stages.zeroshot:cli"),
    "zeroshot-score": Command("capfuse.stages.zeroshot:cli_score", dataset=False),
    "embeddings": Command("capfuse.stages.embeddings:cli_embeddings"),
    "search": Command("capfuse.stages.embeddings:cli_search"),
}
# Commands that run several stages in one process, under one lock, in this order.
SEQUENCES: dict[str, tuple[str, ...]] = {"all": ("folds", "train", "infer")}


def _handler(name: str) -> Callable[..., int]:
    module, function = COMMANDS[name].handler.split(":")
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
    except (DataError, ConfigError, FileNotFoundError, ValueError, RunLocked, DiskFullError) as exc:
        log.error("%s", exc)
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


def _dispatch(args) -> int:
    steps = SEQUENCES.get(args.command, (args.command,))
    if not COMMANDS[steps[0]].dataset:
        return _handler(steps[0])(args)
    # The stages first: the components they build (losses, heads, ...) register their parameters
    # with the config schema, so the config is checked against them as it loads.
    handlers = [_handler(step) for step in steps]
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
    return 0


# -- open vocabulary (paper c) and embeddings (paper d) ------------------------------------------
ZEROSHOT_CONFIG = "configs/zeroshot.yaml"


def _add_zeroshot_commands(sub) -> None:
    p = sub.add_parser(
        "zeroshot",
        help="unseen-class evaluation (ZSL/GZSL vs random): runs/<dataset>/zeroshot.csv, "
        "and the projector in runs/<dataset>/zeroshot/",
    )
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    p.add_argument("--force", action="store_true", help="retrain even when the run is up to date")

    p = sub.add_parser("zeroshot-score", help="score any label names on any folder of images")
    p.add_argument("--images", required=True, help="folder of image files")
    p.add_argument("--labels", required=True, help='comma-separated label names, e.g. "cat,dog,red bus"')
    p.add_argument(
        "--model", default=None, help="zero-shot model folder (default: runs/<dataset>/zeroshot of --data under --root)"
    )
    p.add_argument("--data", default="data/demo", help="dataset whose model to use when --model is not given")
    p.add_argument("--root", default=".")
    p.add_argument("--top", type=int, default=5, help="labels printed per image (default: 5)")
    p.add_argument("--out", default=None, help="write every score to this CSV")
    p.add_argument("--log-level", default="INFO")

    p = sub.add_parser("embeddings", help="export image embeddings (array + ids) to runs/<dataset>/embeddings/")
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    p.add_argument(
        "--model",
        default="zeroshot",
        choices=["zeroshot", "backbone"],
        help="zeroshot: the caption-aligned space (text and image queries); "
        "backbone: the frozen encoder's pooled vectors (image queries)",
    )

    p = sub.add_parser("search", help="nearest images to an image (id or file) or to a text query")
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="an ImageID of the dataset or an image file")
    query.add_argument("--text", help='a text query, e.g. "a dog on a bus"')
    p.add_argument("--k", type=int, default=8, help="neighbours to print (default: 8)")
    p.add_argument("--model", default="zeroshot", choices=["zeroshot", "backbone"])


def _add_names_command(sub) -> None:
    p = sub.add_parser(
        "names",
        help="class names discovered from the captions: runs/<dataset>/classes_discovered.csv and a table; "
        "--ablation: a label-query model and zero-shot with true, discovered and 'class N' names",
    )
    _common(p)
    p.add_argument("--ablation", action="store_true", help="train and compare (runs/<dataset>/names/ablation.md)")
    p.add_argument("--model", default=None, help="the label-query model to compare (default: the config's first)")
    p.add_argument("--zeroshot-config", default=ZEROSHOT_CONFIG, help="zero-shot settings for the comparison")
    p.add_argument(
        "--zeroshot-folds", default=None, help="held-out folds of the zero-shot rows, e.g. 0 (default: the config's)"
    )
    p.add_argument(
        "--seeds",
        default=None,
        type=_int_list,
        help="the model's seeds, e.g. 42,43,44: shares from the means (default: the config's seed)",
    )


def _int_list(text: str) -> list[int]:
    """``42,43,44`` -> [42, 43, 44]; argparse names the option when a part is not a whole number."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole numbers, e.g. 42,43,44"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
