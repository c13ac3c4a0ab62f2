"""``capfuse``: one command whose subcommands mirror the Make targets.

    capfuse data     --data data/demo [--preset default|tiny|large] [--unlabelled N [--no-captions]]
    capfuse validate --data DIR
    capfuse folds    --data DIR --config configs/pipeline.yaml [--force]
    capfuse embed    --data DIR --config configs/pipeline.yaml [--only NAME ...]
    capfuse train    --data DIR --config configs/pipeline.yaml [--only NAME ...]
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

Paths, devices and flags are resolved here and passed down; nothing is computed at import.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from capfuse.config import ConfigError, load_config
from capfuse.utils.log import log, quiet_default, setup_logging

DEFAULT_CONFIG = "configs/pipeline.yaml"


def _common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    p.add_argument("--data", default="data/demo", help="dataset folder in the COMP5329 layout (default: data/demo)")
    p.add_argument("--root", default=".", help="project folder holding folds/, runs/, submissions/ (default: .)")
    if config:
        p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline or model config (default: {DEFAULT_CONFIG})")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set folds.k=3 (repeatable)")
    p.add_argument("--strict", action="store_true", help="fail on any bad train row instead of quarantining it")
    p.add_argument("--wait", action="store_true",
                   help="when another run holds runs/<dataset>/.lock, wait for it instead of stopping")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars (default when CI=true)")
    p.add_argument("--log-level", default="INFO")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capfuse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="generate the bundled demo dataset (COMP5329 layout)")
    p.add_argument("--data", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--preset", default=None, choices=["default", "tiny", "large"],
                   help="size preset (default: tiny for a folder named 'tiny', else default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--unlabelled", type=int, default=0, metavar="N",
                   help="also write N unlabelled images to <data>-unlabelled/ for pseudo-label rounds")
    p.add_argument("--no-captions", action="store_true", help="the unlabelled images come without captions")
    p.add_argument("--log-level", default="INFO")

    # Listed for --help only: main() hands `capfuse bench ...` to capfuse.bench, options and all.
    sub.add_parser("bench", help="speed benchmarks: embedding throughput, stacking + thresholds at 30k rows "
                                 "(`capfuse bench --help`)", add_help=False)

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

    p = sub.add_parser("ratios", help="label-ratio mode: CV at p %% of the labels, without and with pseudo-label rounds")
    _common(p)

    p = sub.add_parser("ablate", help="train the ablation variants and write runs/<dataset>/ablation.{csv,md}")
    _common(p)
    p.set_defaults(config="configs/ablation.yaml")

    storage_help = ("Optuna storage URL for the threshold study (default: sqlite under runs/<dataset>/ensemble/); "
                    "workers pointing at one RDB URL tune one study together")
    p = sub.add_parser("stack", help="blends and a LightGBM stacker on the base models' OOF logits; keep the best")
    _common(p)

    p = sub.add_parser("thresholds", help="global and per-class (Optuna) thresholds, with nested-CV estimates")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)

    p = sub.add_parser("infer", help="stack, thresholds and the checked submission with its manifest")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)

    p = sub.add_parser("report", help="write the self-contained HTML run report runs/<dataset>/report/index.html")
    _common(p)

    p = sub.add_parser("all", help="folds, train and infer in one go")
    _common(p)
    p.add_argument("--storage", default=None, help=storage_help)
    _add_zeroshot_commands(sub)
    return parser


def _context(args):
    from capfuse.paths import Paths

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from capfuse.bench import main as bench_main

        setup_logging("INFO")
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    from capfuse.data.problems import DataError

    from capfuse.utils.io import DiskFullError
    from capfuse.utils.lock import RunLocked

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
    import contextlib

    from capfuse.utils.lock import dataset_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return dataset_lock(paths.runs, wait=args.wait, what=f"capfuse {args.command} --data {args.data}")


def _dispatch(args) -> int:
    cmd = args.command
    if cmd == "data":
        from capfuse.data.demo import PRESETS, make_demo

        preset = args.preset or ("tiny" if Path(args.data).name == "tiny" else "default")
        info = make_demo(args.data, seed=args.seed, force=args.force, **PRESETS[preset])
        log.info("demo dataset (%s) in %s: %s", preset, args.data, {k: info[k] for k in info if k != "class_counts"} if isinstance(info, dict) else info)
        if args.unlabelled:
            from capfuse.data.demo import make_unlabelled

            out = Path(f"{str(args.data).rstrip('/')}-unlabelled")
            # make_unlabelled renames a finished folder into place, so unlabelled_labels.csv
            # marks one it wrote; any other folder there is someone else's and stays.
            ours = (out / "unlabelled_labels.csv").is_file() and not out.is_symlink()
            if ours and not args.force:
                log.info("unlabelled folder %s exists; kept (--force rewrites it)", out)
            elif out.exists() and not ours and (not out.is_dir() or any(out.iterdir())):
                raise ValueError(f"{out} exists and was not written by `capfuse data --unlabelled` (it has no "
                                 "unlabelled_labels.csv); it is not replaced: move it away first")
            else:
                import shutil

                if ours:
                    shutil.rmtree(out)
                log.info("unlabelled folder: %s", make_unlabelled(out, args.unlabelled, size=PRESETS[preset]["size"],
                                                                 seed=args.seed, captions=not args.no_captions))
        return 0
    if cmd == "faulty":
        from capfuse.data.faults import make_faulty_dataset

        out = Path(args.data)
        # make_faulty_dataset replaces its folder wholesale: only one it wrote (its test.csv
        # starts with the BOM and the spaced header no one else writes) or an empty one.
        try:
            ours = not out.is_symlink() and (out / "test.csv").read_bytes().startswith(b"\xef\xbb\xbfImageID , Caption")
        except OSError:
            ours = False
        if out.exists() and not ours and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"{out} exists and is not a dataset written by `capfuse faulty`; it is not replaced: "
                             "move it away or pick another --data")
        make_faulty_dataset(args.data)
        log.info("faulty dataset written to %s", args.data)
        return 0

    if cmd in ZEROSHOT_COMMANDS:
        return _zeroshot_dispatch(args)
    paths, cfg, quiet = _context(args)
    with _locked(paths, args):
        return _stage(cmd, args, paths, cfg, quiet)


def _stage(cmd: str, args, paths, cfg: dict, quiet: bool) -> int:
    if cmd == "validate":
        from capfuse.stages.common import load_dataset

        ds = load_dataset(paths, cfg, quiet=quiet)
        print((paths.runs / "validation.txt").read_text(encoding="utf-8"))
        log.info("usable train rows %d, quarantined %d, test rows %d", len(ds.val.train), len(ds.val.quarantine), len(ds.val.test))
        return 0
    if cmd == "embed":
        from capfuse.stages.embed import run_embed

        rows = run_embed(paths, cfg, Path(args.config), only=args.only, quiet=quiet)
        print(f"{len(rows)} cached arrays in {paths.cache}, {sum(r['mb'] for r in rows):.1f} MB")
        return 0
    if cmd in ("folds", "all"):
        from capfuse.stages.folds import run_folds

        run_folds(paths, cfg, force=getattr(args, "force", False), quiet=quiet)
    if cmd in ("train", "all"):
        from capfuse.stages.train import run_train
        from capfuse.utils.dist import init_distributed

        init_distributed()  # a no-op unless launched by torchrun with several processes

        run_train(paths, cfg, Path(args.config), only=getattr(args, "only", None), quiet=quiet)
    if cmd == "ratios":
        from capfuse.stages.ratios import run_ratios

        table = run_ratios(paths, cfg, Path(args.config), quiet=quiet)
        print(table.to_string(index=False))
        return 0
    if cmd == "ablate":
        from capfuse.stages.ablate import run_ablate

        table = run_ablate(paths, cfg, Path(args.config), quiet=quiet)
        print(table.to_string(index=False))
        return 0
    if cmd == "stack":
        from capfuse.stages.ensemble import run_stack

        run_stack(paths, cfg, quiet=quiet)
    if cmd == "thresholds":
        from capfuse.stages.ensemble import run_thresholds

        run_thresholds(paths, cfg, storage=args.storage, quiet=quiet)
    if cmd == "report":
        from capfuse.stages.report import run_report

        print(f"Report: {run_report(paths, cfg, quiet=quiet)}")
        return 0
    if cmd in ("infer", "all"):
        from capfuse.stages.infer import run_infer, summary_table

        result = run_infer(paths, cfg, quiet=quiet, storage=args.storage)
        m = result["manifest"]
        print("\n" + summary_table(paths))
        print(f"\nSubmission: {result['paths']['latest_csv']}  ({m['second_level']['kept']}, {m['threshold']['kind']} thresholds)")
        print(f"CV mean F1 of the submitted pipeline: {m['cv']['mean_f1']:.4f} in-sample, "
              f"{m['cv_nested_mean_f1']:.4f} nested  (mAP {m['cv']['map']:.4f})")
    return 0


# -- open vocabulary (paper c) and embeddings (paper d) ------------------------------------------
ZEROSHOT_CONFIG = "configs/zeroshot.yaml"
ZEROSHOT_COMMANDS = ("zeroshot", "zeroshot-score", "embeddings", "search")


def _add_zeroshot_commands(sub) -> None:
    p = sub.add_parser("zeroshot", help="unseen-class evaluation (ZSL/GZSL vs random): runs/<dataset>/zeroshot.csv, "
                                        "and the projector in runs/<dataset>/zeroshot/")
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    p.add_argument("--force", action="store_true", help="retrain even when the run is up to date")

    p = sub.add_parser("zeroshot-score", help="score any label names on any folder of images")
    p.add_argument("--images", required=True, help="folder of image files")
    p.add_argument("--labels", required=True, help='comma-separated label names, e.g. "cat,dog,red bus"')
    p.add_argument("--model", default=None,
                   help="zero-shot model folder (default: runs/<dataset>/zeroshot of --data under --root)")
    p.add_argument("--data", default="data/demo", help="dataset whose model to use when --model is not given")
    p.add_argument("--root", default=".")
    p.add_argument("--top", type=int, default=5, help="labels printed per image (default: 5)")
    p.add_argument("--out", default=None, help="write every score to this CSV")
    p.add_argument("--log-level", default="INFO")

    p = sub.add_parser("embeddings", help="export image embeddings (array + ids) to runs/<dataset>/embeddings/")
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    p.add_argument("--model", default="zeroshot", choices=["zeroshot", "backbone"],
                   help="zeroshot: the caption-aligned space (text and image queries); "
                        "backbone: the frozen encoder's pooled vectors (image queries)")

    p = sub.add_parser("search", help="nearest images to an image (id or file) or to a text query")
    _common(p)
    p.set_defaults(config=ZEROSHOT_CONFIG)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="an ImageID of the dataset or an image file")
    query.add_argument("--text", help='a text query, e.g. "a dog on a bus"')
    p.add_argument("--k", type=int, default=8, help="neighbours to print (default: 8)")
    p.add_argument("--model", default="zeroshot", choices=["zeroshot", "backbone"])


def _zeroshot_dispatch(args) -> int:
    if args.command == "zeroshot-score":
        from capfuse.paths import Paths
        from capfuse.stages.zeroshot import model_dir, run_zeroshot_score

        folder = Path(args.model) if args.model else model_dir(Paths(Path(args.data), Path(args.root).resolve()))
        run_zeroshot_score(folder, Path(args.images), args.labels.split(","), top=args.top,
                           out=Path(args.out) if args.out else None)
        return 0
    paths, cfg, quiet = _context(args)
    with _locked(paths, args):
        return _zeroshot_stage(args, paths, cfg, quiet)


def _zeroshot_stage(args, paths, cfg: dict, quiet: bool) -> int:
    if args.command == "zeroshot":
        from capfuse.stages.zeroshot import run_zeroshot

        table = run_zeroshot(paths, cfg, force=args.force, quiet=quiet)
        print(table.to_string(index=False, float_format="%.4f"))
    elif args.command == "embeddings":
        from capfuse.stages.embeddings import run_embeddings

        out = run_embeddings(paths, cfg, model=args.model, quiet=quiet)
        print(f"{out['rows']} embeddings of dimension {out['dim']}: {out['array']} and {out['ids']}")
    else:
        from capfuse.stages.embeddings import run_search

        hits = run_search(paths, cfg, image=args.image, text=args.text, k=args.k, model=args.model, quiet=quiet)
        print(hits.to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
