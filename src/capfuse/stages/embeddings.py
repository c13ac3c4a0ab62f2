"""The embeddings and search stages: export every image's embedding, then query it.

``zeroshot`` exports the trained projector's caption-aligned space (``runs/<dataset>/zeroshot/``):
images and texts live in it, so a text query ("a dog on a bus") and an image query both work.
``backbone`` exports the frozen encoder's pooled vectors from the feature cache: image queries
only. Images that could not be read have no row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.data.dataset import load_dataset
from capfuse.paths import Paths
from capfuse.utils.io import read_json
from capfuse.utils.log import log, stage
from capfuse.zeroshot.inputs import embed_image_files, load_features
from capfuse.zeroshot.io import META_FILE, load_model, model_dir
from capfuse.zeroshot.search import (
    SPACES,
    embeddings_dir,
    export_files,
    nearest,
    normalise,
    read_embeddings,
    write_embeddings,
)
from capfuse.zeroshot.settings import ZeroShotSettings
from capfuse.zeroshot.text import CaptionSpace
from capfuse.zeroshot.train import embed_rows


def run_embeddings(paths: Paths, cfg: dict, *, model: str = "zeroshot", quiet: bool | None = None) -> dict:
    """Write ``runs/<dataset>/embeddings/<model>.{npy,json}`` and ``<model>_ids.csv``."""
    if model not in SPACES:
        raise ValueError(f"--model must be one of {sorted(SPACES)}, got {model!r}")
    with stage("embeddings", f"{paths.dataset}: {model}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        rows = np.flatnonzero(ds.image_ok)
        if model == "zeroshot":
            net, meta = load_model(model_dir(paths))
            settings = ZeroShotSettings.from_config({"zeroshot": meta["settings"]})
            feats, _ = load_features(ds, settings, quiet=quiet)
            vectors = embed_rows(net, feats, rows, tta=settings.tta)
            source = {
                "model": "zeroshot",
                "fingerprint": meta["fingerprint"],
                "image_encoder": meta["image_encoder"],
                "caption_encoder": meta["caption_encoder"],
            }
        else:
            settings = ZeroShotSettings.from_config(cfg)
            feats, checksums = load_features(ds, settings, quiet=quiet)
            vectors = np.asarray(feats.pooled["orig"][rows], np.float32)
            source = {"model": "backbone", "image_encoder": settings.image_encoder, "checksum": checksums[0]}
        n_train = len(ds.train_ids)
        captions = list(ds.val.train["Caption"]) + list(ds.val.test["Caption"])
        ids = pd.DataFrame(
            {
                "ImageID": [(ds.train_ids + ds.test_ids)[r] for r in rows],
                "split": np.where(rows < n_train, "train", "test"),
                "Caption": [captions[r] for r in rows],
            }
        )
        files = write_embeddings(embeddings_dir(paths), model, vectors, ids, {"space": SPACES[model], **source})
        log.info("wrote %d x %d embeddings to %s", len(vectors), vectors.shape[1], files["array"])
        return {"rows": len(vectors), "dim": int(vectors.shape[1]), "array": files["array"], "ids": files["ids"]}


def run_search(
    paths: Paths,
    cfg: dict,
    *,
    image: str | None = None,
    text: str | None = None,
    k: int = 8,
    model: str = "zeroshot",
    quiet: bool | None = None,
) -> pd.DataFrame:
    """The ``k`` nearest exported images to an image (dataset id or file) or a text query.

    A missing export, or one older than the projector, is made first (``run_embeddings``). Returns ``rank, ImageID, split,
    cosine, Caption``.
    """
    if (image is None) == (text is None):
        raise ValueError("search needs exactly one of an image (id or file) and a text query")
    folder = embeddings_dir(paths)
    meta_file = export_files(folder, model)["meta"]
    stale = not meta_file.exists()
    if not stale and model == "zeroshot":  # the projector was retrained since the export
        stale = read_json(meta_file).get("fingerprint") != read_json(model_dir(paths) / META_FILE).get("fingerprint")
    if stale:
        run_embeddings(paths, cfg, model=model, quiet=quiet)
    vectors, ids, meta = read_embeddings(folder, model)
    if text is not None:
        if meta["space"] != "text":
            raise ValueError(f"the {model} embeddings are image features: text queries need --model zeroshot")
        net_meta = load_model(model_dir(paths))[1] if model == "zeroshot" else meta
        # The raw query, not a prompt template: a query reads like a caption already.
        query = CaptionSpace.load(net_meta["caption_encoder"]).texts([text])[0]
    elif image in set(ids["ImageID"]):
        query = np.asarray(vectors[int(np.flatnonzero(ids["ImageID"].to_numpy() == image)[0])])
    elif Path(image).is_file():
        if model == "zeroshot":
            net, net_meta = load_model(model_dir(paths))
            tta = ZeroShotSettings.from_config({"zeroshot": net_meta["settings"]}).tta
            feats, ok, problems = embed_image_files(
                [Path(image)], net_meta["image_encoder"], views=("orig", "hflip") if tta else ("orig",)
            )
            if problems:
                raise ValueError(f"cannot read the query image: {problems[0]}")
            query = embed_rows(net, feats, np.arange(1), tta=tta)[0]
        else:
            feats, ok, problems = embed_image_files([Path(image)], meta["image_encoder"])
            if problems:
                raise ValueError(f"cannot read the query image: {problems[0]}")
            query = normalise(feats.pooled["orig"][0])
    else:
        raise FileNotFoundError(f"--image {image!r} is neither an ImageID of {paths.dataset} nor an image file")
    rows, sims = nearest(vectors, query, k)
    hits = ids.iloc[rows][["ImageID", "split", "Caption"]].reset_index(drop=True)
    hits.insert(0, "rank", np.arange(1, len(rows) + 1))
    hits.insert(3, "cosine", sims)
    return hits


def cli_embeddings(args, paths, cfg: dict, quiet: bool) -> int:
    out = run_embeddings(paths, cfg, model=args.model, quiet=quiet)
    print(f"{out['rows']} embeddings of dimension {out['dim']}: {out['array']} and {out['ids']}")
    return 0


def cli_search(args, paths, cfg: dict, quiet: bool) -> int:
    hits = run_search(paths, cfg, image=args.image, text=args.text, k=args.k, model=args.model, quiet=quiet)
    print(hits.to_string(index=False, float_format="%.3f"))
    return 0
