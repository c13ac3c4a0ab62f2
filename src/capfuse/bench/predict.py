"""Prediction throughput of an exported bundle, end to end, and what its faster variants cost.

Each variant predicts the whole test folder the way ``capfuse predict`` does (test.csv read and
checked, images decoded, encoders, every fold of every model, second level, thresholds, the
caption fallback), timed from the folder to the label sets. The encoders' ONNX exports are made
once beforehand, on a few rows, and kept: ``predict --cache`` keeps them the same way, and a
Kaggle notebook pays for them once. The feature arrays are removed before every timed run, so
no variant reads features computed by an earlier one.

The variants: the default bundle; ``folds=1`` (the first fold of every model, under the full
second level); ``fast`` (the caption-only models, one fold each, refitted second level; see
``capfuse.bundle.export``). When the folder has labels (``test_labels.csv`` beside
``test.csv``, as the demo has) each variant's mean F1 against them and its agreement with the
default's label sets are measured too; the nested CV figures come from the bundle (OOF only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.bundle import Predictor
from capfuse.bundle.inputs import read_test_folder
from capfuse.metrics import mean_sample_f1
from capfuse.utils.io import read_json

VARIANTS = {"default": {}, "one fold": {"folds": 1}, "fast": {"fast": True}}


def _capfuse(*args: str) -> None:
    # The CLI in a child process: a bench module may not import the CLI (pyproject's layers).
    code = "import sys; from capfuse.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *args, "--quiet"], check=True)


def export_for_bench(data: Path, config: Path, out: Path) -> Path:
    """A bundle of ``data``'s finished run (``make all``), training it first when there is none.

    ``--wait``: another command on the same dataset holds its lock for minutes at most, and a
    benchmark would rather queue behind it than fail."""
    if not (Path("runs") / data.name / "ensemble" / "kept" / "kept.json").exists():
        print(f"no finished run for {data}: training it (capfuse all, minutes)", flush=True)
        _capfuse("all", "--data", str(data), "--config", str(config), "--wait")
    _capfuse("export", "--data", str(data), "--config", str(config), "--out", str(out), "--wait")
    return out


def _labels(data: Path, ids: list[str], class_ids: list[int]) -> np.ndarray | None:
    path = data / "test_labels.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("ImageID").loc[ids]
    col = {c: j for j, c in enumerate(class_ids)}
    y = np.zeros((len(ids), len(class_ids)), dtype=np.uint8)
    for i, labels in enumerate(frame["Labels"]):
        for c in labels.split():
            y[i, col[int(c)]] = 1
    return y


def _drop_features(work: Path) -> None:
    """Everything in the cache but the encoders' exports: each timed run computes its features."""
    cache = work / "cache"
    for entry in cache.iterdir() if cache.exists() else ():
        if entry.name != "onnx":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def bench_predict(bundle: Path, data: Path, *, rounds: int = 1) -> dict:
    """Images/s of every variant (the best of ``rounds`` timed runs), its mean F1 on the folder's
    labels and agreement with the default, and the bundle's size in MB."""
    record = read_json(bundle / "bundle.json")
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    # The machine's load beside the figures: on a shared machine they move with it.
    out: dict = {"bundle": str(bundle), "size_mb": size / 2**20, "cores": os.cpu_count(), "variants": {}}
    out["load_before"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="capfuse-bench-predict-") as tmp:
        work = Path(tmp)
        warm = read_test_folder(data, max_pixels=record.get("max_pixels"))
        few = replace(warm, ids=warm.ids[:8], captions=warm.captions[:8], image_ok=warm.image_ok[:8])
        preds = {}
        for label, kwargs in VARIANTS.items():
            if kwargs.get("fast") and not record.get("fast"):
                continue
            predictor = Predictor.load(bundle, work_dir=work, **kwargs)
            predictor.predict_rows(few)  # the encoders' exports, made once and kept (see above)
            times = []
            for _ in range(rounds):
                _drop_features(work)
                start = time.perf_counter()
                pred = predictor.predict_folder(data)
                times.append(time.perf_counter() - start)
            preds[label] = pred
            out["variants"][label] = {
                "rows": len(pred.ids),
                "seconds": min(times),
                "img_s": len(pred.ids) / min(times),
                "models": {n: predictor.folds[n] for n in predictor.models},
            }
    out["load_after"] = os.getloadavg()[0]
    y = _labels(data, preds["default"].ids, preds["default"].class_ids)
    full = preds["default"].binary
    nested = {"default": record["cv"]["thresholds_nested_mean_f1"], "one fold": None}
    if record.get("fast"):
        nested["fast"] = record["fast"]["nested_mean_f1"]
    for label, pred in preds.items():
        v = out["variants"][label]
        v["nested_cv"] = nested[label]
        v["same_labels_as_default"] = float((pred.binary == full).all(1).mean())
        v["f1_vs_default"] = float(mean_sample_f1(full, pred.binary))
        v["test_f1"] = None if y is None else float(mean_sample_f1(y, pred.binary))
    return out


def print_predict(r: dict) -> None:
    v = r["variants"]
    print(f"predict (bundle {r['bundle']}, {r['size_mb']:.1f} MB), end to end on {v['default']['rows']} test rows:")
    print("  (decode, encoders, every fold of every model, second level, thresholds; ONNX exports made beforehand)")
    for label, x in v.items():
        nested = "   n/a" if x["nested_cv"] is None else f"{x['nested_cv']:.4f}"
        test = "n/a" if x["test_f1"] is None else f"{x['test_f1']:.4f}"
        models = ", ".join(f"{n} x{k}" for n, k in x["models"].items())
        print(
            f"  {label:<9}: {x['img_s']:6.1f} images/s  nested CV {nested}  test F1 {test}  "
            f"same label set as default {x['same_labels_as_default']:.3f}  ({models})"
        )
    print("  targets: >= 40 images/s default, >= 100 fast; test F1 from the folder's test_labels.csv")
    print(
        f"  load average (1 min) {r['load_before']:.1f} before, {r['load_after']:.1f} after, on {r['cores']} cores "
        "(above the core count, other work shares the CPU and the figures are lower than on an idle machine)"
    )
