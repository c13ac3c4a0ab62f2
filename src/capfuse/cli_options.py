"""The ``capfuse`` command line's options: every subcommand's arguments, their defaults and help.

Kept apart from the routing in `capfuse.cli`: options change with every new flag, the routing
only with a new command. Imports nothing heavy, so `capfuse --help` stays instant.
"""

from __future__ import annotations

import argparse

DESCRIPTION = "``capfuse``: one command whose subcommands mirror the Make targets."
DEFAULT_CONFIG = "configs/pipeline.yaml"


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


def _budget_options(p: argparse.ArgumentParser) -> None:
    """A time budget for the whole command (capfuse.budget)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--time-limit",
        default=None,
        metavar="DURATION",
        help="finish the whole command within DURATION (60m, 1h30m, 90s): a short probe plans which "
        "models and epochs fit, the plan is re-checked against the clock, runs/<dataset>/plan.json "
        "records it",
    )
    g.add_argument(
        "--plan",
        default=None,
        metavar="FILE",
        help="replay a budgeted run's plan.json without the clock: the same models, epochs and rounds",
    )


def _results_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="also write the measured table as a results file under DIR, e.g. results (the Makefile's "
        "RESULTS); default: $CAPFUSE_RESULTS, else none, so test runs never write one",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capfuse", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="generate the bundled demo dataset (COMP5329 layout)")
    p.add_argument("--data", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument(
        "--preset",
        default=None,
        choices=["default", "tiny", "large", "shifted", "recurring"],
        help="size preset (default: tiny for a folder named 'tiny', else default); shifted: the default's size "
        "with test objects drawn in looks training never shows; recurring: shifted, with a third of the "
        "training images near-copies of the others",
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

    _add_config_command(sub)

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
    _results_option(p)

    p = sub.add_parser("ablate", help="train the ablation variants and write runs/<dataset>/ablation.{csv,md}")
    _common(p)
    _results_option(p)
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
    _results_option(p)

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

    p = sub.add_parser(
        "shift",
        help="train/test shift: adversarial validation and novelty, runs/<dataset>/shift.json (infer does it too)",
    )
    _common(p)

    p = sub.add_parser("all", help="folds, train and infer in one go")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)
    _results_option(p)
    _engine_options(p)
    _budget_options(p)
    _add_zeroshot_commands(sub)
    _add_names_command(sub)
    _add_results_command(sub)
    return parser


def _add_config_command(sub) -> None:
    p = sub.add_parser("config", help="a config resolved, each value with its origin (show), or every model (list)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="every value of a model, preset or config file, with the file, --set or default it came from"
    )
    show.add_argument("name", help="a model name, a preset name (fast, default, best) or a config file")
    show.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.001 (repeatable)",
    )
    listing = actions.add_parser("list", help="every model config: kind, inputs, what it is, which presets use it")
    listing.add_argument("--markdown", action="store_true", help="as a Markdown table")
    for q in (show, listing):
        q.add_argument("--configs", default="configs", help="the config folder (default: configs)")
        q.add_argument("--log-level", default="WARNING")


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
    _results_option(p)

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
        "--zeroshot-folds",
        default=None,
        type=_int_list,
        help="held-out folds of the zero-shot rows, e.g. 0 or 0,1 (default: the config's)",
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
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def _add_results_command(sub) -> None:
    p = sub.add_parser(
        "results", help="results files: collect a finished run's (runs/), render the README's presets table"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser(
        "collect",
        help="write results/runs/ for a run already finished (its commit from its manifest, this host's machine)",
    )
    c.add_argument("--run", required=True, help="the finished run folder, runs/<dataset>")
    c.add_argument(
        "--preset", default=None, help="the preset it ran (default: the preset that trains exactly its models)"
    )
    c.add_argument(
        "--manifest", default=None, help="the run's manifest (default: submissions/<dataset>-latest.json beside runs/)"
    )
    c.add_argument("--results", default="results", help="the results folder (default: results)")
    c.add_argument("--log-level", default="INFO")
    r = actions.add_parser("render", help="rewrite README.md's presets table from results/runs/")
    r.add_argument("--results", default="results", help="the results folder (default: results)")
    r.add_argument("--readme", default="README.md", help="the file holding the presets block (default: README.md)")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 when the block is out of date")
    r.add_argument("--log-level", default="INFO")
