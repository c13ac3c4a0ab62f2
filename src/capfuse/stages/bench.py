"""``make bench``: the speed figures the issues set targets for, printed by one command.

Stacking plus thresholds is timed on synthetic OOF logits at competition size (30,000 rows,
10 models, 18 classes; ``capfuse.bench.second_level``).

Embedding throughput is measured on COMP5329-sized JPEGs (640×480) made from the demo
generator, JPEG decoding included, against a naive timm loop (full-size decode, timm's eval
transform, default memory layout) run in the same command on the same images.

Prediction throughput (``capfuse.bench.predict``) is end to end on the demo's test folder with
a bundle exported from ``runs/demo`` (trained first when there is no finished run), or
``--bundle``; with the bundle's size and what ``--fast`` and one fold per model cost.

``--only jobs`` times one model's folds trained serially against ``--jobs N`` side by side
(``capfuse.bench.jobs``). ``--only finetune`` times one fold of a ``finetune: true`` model with
and without batches decoded ahead (``capfuse.bench.finetune``; a GPU config, on a GPU).
``top-stage`` times the training step of Lite0's top stage on its cached input, fp32 and bf16,
NCHW and channels_last (``capfuse.bench.top_stage``). ``linear`` times the linear models'
logistic fit at competition size by BLAS threads (``capfuse.bench.linear``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from capfuse.bench.embedding import bench_embed
from capfuse.bench.figures import figure_rows
from capfuse.bench.finetune import bench_finetune, print_finetune
from capfuse.bench.jobs import bench_jobs, print_jobs
from capfuse.bench.linear import bench_linear, print_linear
from capfuse.bench.predict import bench_predict, export_for_bench, print_predict
from capfuse.bench.second_level import bench_stack_thresholds
from capfuse.bench.top_stage import bench_top_stage, print_top_stage
from capfuse.bench.training import report_training
from capfuse.config.schema import ImageEncoderSpec
from capfuse.results.measured import write_measured
from capfuse.results.tables import results_dir
from capfuse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capfuse bench", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    # The image_encoder block's defaults: the backbone, size and batch the pipeline embeds with.
    parser.add_argument("--encoder", default=ImageEncoderSpec.name)
    parser.add_argument("--size", type=int, default=ImageEncoderSpec.size)
    parser.add_argument("--batch-size", type=int, default=ImageEncoderSpec.batch_size)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per variant (medians)")
    parser.add_argument(
        "--only",
        choices=["embed", "stack", "linear", "training", "predict", "jobs", "finetune", "top-stage"],
        default=None,
        help="run one benchmark only",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training, finetune: exactly this many epochs per fold"
    )
    parser.add_argument("--rows", type=int, default=30000, help="OOF rows for the stack benchmark")
    parser.add_argument("--models", type=int, default=10, help="base models for the stack benchmark")
    parser.add_argument("--bundle", default=None, help="predict: this bundle (default: export runs/<dataset>)")
    parser.add_argument("--data", default="data/demo", help="predict: the test folder (and run) to predict")
    parser.add_argument("--config", default="configs/pipeline.yaml", help="predict: the run's config, to export it")
    parser.add_argument(
        "--model",
        default=None,
        help="jobs: the model trained serially and as jobs (fusion_logit_multilevel_origview); finetune: one",
    )
    parser.add_argument("--jobs", type=int, default=2, help="jobs: how many at once against one")
    parser.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="also write every figure as a results file under DIR/bench/ (the Makefile passes results; "
        "default: $CAPFUSE_RESULTS, else none)",
    )
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows: list[dict] = []  # every figure measured, for the results file
    if args.only in (None, "embed"):
        r = bench_embed(args.images, args.encoder, args.size, args.batch_size, rounds=args.rounds)
        print_embed(r)
        rows += figure_rows("embed", r)
    if args.only in (None, "stack"):
        rows += figure_rows("stack", bench_second_level(args.rows, args.models))
    if args.only in (None, "linear"):
        r = bench_linear(rounds=args.rounds)
        print_linear(r)
        rows += figure_rows("linear", r)
    if args.only in (None, "top-stage"):
        r = bench_top_stage(args.encoder, args.size, rounds=args.rounds)
        print_top_stage(r)
        rows += figure_rows("top-stage", r)
    if args.only in (None, "predict"):
        with tempfile.TemporaryDirectory(prefix="capfuse-bench-bundle-") as tmp:
            bundle = Path(args.bundle) if args.bundle else None
            if bundle is None:
                bundle = export_for_bench(Path(args.data), Path(args.config), Path(tmp) / "bundle")
            r = bench_predict(bundle, Path(args.data))
            print_predict(r)
            rows += figure_rows("predict", r)
    if args.only == "jobs":  # trains a model 2 x rounds times: only when asked
        model = args.model or "fusion_logit_multilevel_origview"
        r = bench_jobs(Path(args.data), Path(args.config), model, jobs=args.jobs, rounds=args.rounds)
        print_jobs(r)
        rows += figure_rows("jobs", r)
    if args.only == "finetune":  # trains one fold 2 x rounds times: only when asked
        r = bench_finetune(
            Path(args.data), Path(args.config), model=args.model, epochs=args.epochs or 1, rounds=args.rounds
        )
        print_finetune(r)
        rows += figure_rows("finetune", r)
    if args.only == "training":  # net models at competition size: minutes each, so only when asked
        rows += figure_rows("training", report_training(args.rows, args.epochs))
    results = results_dir(args.results)
    if results is not None and rows:
        write_results_file(results, args, pd.DataFrame(rows))
    return 0


# The options each benchmark reads: the set-up its results file records.
OPTIONS_USED = {
    "embed": ("images", "encoder", "size", "batch_size", "rounds"),
    "stack": ("rows", "models"),
    "linear": ("rounds",),
    "top-stage": ("encoder", "size", "rounds"),
    "predict": ("data", "config", "bundle"),
    "jobs": ("data", "config", "model", "jobs", "rounds"),
    "finetune": ("data", "config", "model", "epochs", "rounds"),
    "training": ("rows", "epochs"),
}


def write_results_file(results: Path, args: argparse.Namespace, table: pd.DataFrame) -> None:
    """``results/bench/<date>_<benchmark or all>_<machine>_<commit7>.{csv,md}``; a failure to
    write it is one warning line, the figures stay printed above."""
    ran = list(dict.fromkeys(table["benchmark"]))
    facts = {"benchmarks": ", ".join(ran)}
    facts |= {k: getattr(args, k) for name in ran for k in OPTIONS_USED.get(name, ())}
    note = "Medians of alternating timed rounds; a loaded machine gives lower absolute figures, ratios move less."
    write_measured(results, "bench", table, root=Path.cwd(), name=args.only or "all", facts=facts, notes=[note])


def print_embed(r: dict) -> None:
    """The embedding figures: one view per runtime and precision, decode once, captions."""
    print(f"embed {r['encoder']} @ {r['size']} px, one view, {r['images']} JPEGs 640x480, decoding included")
    print("  (median of alternating rounds; absolute figures drift with the machine's load, ratios less):")
    fp32 = r["img_s"].get("onnx fp32")
    for label, img_s in r["img_s"].items():
        cos = f"   pooled cosine to fp32 {r['cosine'][label]:.4f}" if label in r["cosine"] else ""
        print(f"  {label:<14}: {img_s:7.1f} images/s  {img_s / fp32:5.2f}x onnx fp32{cos}")
    best = max(r["img_s"], key=r["img_s"].get)
    print(f"  naive timm    : {r['naive_img_s']:7.1f} images/s")
    print(f"  ratio         : {fp32 / r['naive_img_s']:7.2f}x (the default, onnx fp32, over the naive loop)")
    print(f"  fastest       : {best}, {r['img_s'][best]:.1f} images/s (target >= 150 images/s on an idle machine)")
    parts = r["parts_img_s"]
    print(
        f"  parts alone   : decoding {parts['decode']:.1f} images/s on one thread; the onnx fp32 graph "
        f"{parts['model']:.1f} images/s on decoded batches, {torch.get_num_threads()} threads"
    )
    m = r["multi"]
    print(
        f"  decode once   : {' + '.join(m['encoders'])}, orig + hflip ({m['views']} views, {m['runtime']}): "
        f"{m['once_img_s_per_view']:.1f} images/s per view in one pass, {m['apart_img_s_per_view']:.1f} in "
        f"{m['views']} passes ({m['once_img_s_per_view'] / m['apart_img_s_per_view']:.2f}x)"
    )
    c = r["captions"]
    print(
        f"  MiniLM captions (batch {c['batch_size']}, {c['captions']} captions): torch {c['captions_s']['torch']:.0f}/s, "
        f"ONNX Runtime {c['captions_s']['onnx']:.0f}/s ({c['captions_s']['onnx'] / c['captions_s']['torch']:.2f}x), "
        f"pooled cosine {c['cosine']:.5f}"
    )


def bench_second_level(rows: int, models: int, classes: int = 18) -> dict:
    """Stacking (5 folds, OOF and test) plus per-class thresholds and their nested estimate."""
    r = bench_stack_thresholds(n_rows=rows, n_models=models, n_classes=classes, num_threads=torch.get_num_threads())
    work = r["features_s"] + r["stack_s"] + r["thresholds_s"]
    print(f"stack + thresholds on {rows} OOF rows x ({models} models x {classes} classes), synthetic, 5 folds:")
    print(f"  LightGBM stacker, OOF + test : {r['stack_s']:7.1f} s")
    print(f"  per-class thresholds        : {r['thresholds_s']:7.1f} s")
    print(f"  stack + thresholds          : {work:7.1f} s   (target <= 300)")
    print(f"  nested threshold estimate   : {r['nested_thresholds_s']:7.1f} s   (reporting only)")
    print(
        f"  OOF mean F1, global threshold: mean blend {r['blend_oof_f1_global']:.4f}, weighted blend "
        f"{r['weighted_blend_oof_f1_global']:.4f}, stacker {r['stack_oof_f1_global']:.4f}"
    )
    print(
        f"  stacker with per-class thresholds: {r['stack_oof_f1_class']:.4f} in-sample, "
        f"{r['nested_nested']:.4f} nested (global: {r['nested_global_nested']:.4f} nested)"
    )
    return r


if __name__ == "__main__":
    raise SystemExit(main())
