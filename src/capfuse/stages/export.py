"""The export stage: a finished run (``make all``) → a self-contained bundle folder for ``make predict``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from capfuse.bundle.export import export_bundle
from capfuse.data.dataset import load_dataset
from capfuse.utils.log import stage


def default_out(root: Path, dataset: str) -> Path:
    return root / "bundles" / f"{dataset}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    out = Path(args.out) if args.out else default_out(paths.root, paths.dataset)
    ds = load_dataset(paths, cfg, quiet=quiet)
    with stage("export", paths.dataset):
        record = export_bundle(paths, cfg, ds, out, top_k=getattr(args, "top_k", None))
    cv = record["cv"]
    pruned = record["pruning"]
    if pruned:
        print(
            f"\ntop-k {pruned['top_k']}: kept {pruned['kept']} of {pruned['from']}; "
            f"size {pruned['full_mb']:.2f} MB before, {record['size_mb']:.2f} MB after; rows without an image: "
            f"{record['image_fallback']['model'] or 'class priors (no caption-only model kept)'}"
        )
    fast = record["fast"]
    if fast:
        print(
            f"fast variant (predict --fast): {fast['second_level']['models']}, one fold each, "
            f"nested CV mean F1 {fast['nested_mean_f1']}"
        )
    print(
        f"\nBundle: {out}  ({record['size_mb']:.1f} MB, {len(record['models'])} models, "
        f"{record['second_level']['candidate']}, {record['thresholds']['kind']} thresholds)\n"
        f"nested CV mean F1 of what it predicts: {cv['thresholds_nested_mean_f1']}\n"
        f"models: {json.dumps({m: v['cv_mean_f1'] for m, v in record['models'].items()})}\n"
        f"predict with: capfuse predict --bundle {out} --data <folder with test.csv and data/>"
    )
    return 0
