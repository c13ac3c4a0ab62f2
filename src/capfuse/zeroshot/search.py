"""Exported image embeddings for search: an array of unit vectors, its ids, and nearest neighbours.

An export is three files in ``runs/<dataset>/embeddings/``: ``<model>.npy`` (float32 ``[N, E]``,
L2-normalised, so a dot product is a cosine), ``<model>_ids.csv`` (``row,ImageID,split,Caption``,
one line per array row) and ``<model>.json`` (what produced it: the space, the model's
fingerprint). The array and the ids are written before the sidecar, each atomically, and the
reader checks that they agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.paths import Paths
from capfuse.utils.io import read_json, write_csv, write_json, write_npy

SPACES = {"zeroshot": "text", "backbone": "image"}  # which queries an export answers


def embeddings_dir(paths: Paths) -> Path:
    """Where a data set's exports live."""
    return paths.runs / "embeddings"


def export_files(folder: Path, name: str) -> dict[str, Path]:
    folder = Path(folder)
    return {"array": folder / f"{name}.npy", "ids": folder / f"{name}_ids.csv", "meta": folder / f"{name}.json"}


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def write_embeddings(folder: Path, name: str, vectors: np.ndarray, ids: pd.DataFrame, meta: dict) -> dict[str, Path]:
    """Write an export; ``ids`` has one row per vector with at least ``ImageID``."""
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    if "ImageID" not in ids:
        raise ValueError("ids need an ImageID column")
    files = export_files(folder, name)
    files["meta"].unlink(missing_ok=True)  # no sidecar vouches for a half-replaced export
    write_npy(files["array"], normalise(vectors))
    write_csv(files["ids"], ids.reset_index(drop=True).rename_axis("row").reset_index())
    write_json(files["meta"], {**meta, "rows": int(len(vectors)), "dim": int(vectors.shape[1])})
    return files


def read_embeddings(folder: Path, name: str) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """The array, its ids and the sidecar; a missing or inconsistent export is an error that says so."""
    files = export_files(folder, name)
    if not files["meta"].exists():
        raise FileNotFoundError(
            f"no embeddings {files['array']}: run `make embeddings` (capfuse embeddings --model {name}) first"
        )
    meta = read_json(files["meta"])
    vectors = np.load(files["array"], mmap_mode="r")
    ids = pd.read_csv(files["ids"], dtype={"ImageID": str}, keep_default_na=False)
    if len(ids) != len(vectors) or list(ids["row"]) != list(range(len(ids))):
        raise ValueError(
            f"{files['ids']}: its {len(ids)} rows do not number the {len(vectors)} rows of "
            f"{files['array']} in order; re-run `make embeddings`"
        )
    return vectors, ids, meta


def nearest(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` vectors with the highest cosine to ``query``, best first, and the cosines.

    Ties go to the lower row, so a query that is one of the rows finds itself first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q = normalise(np.asarray(query).reshape(-1))
    sims = np.asarray(vectors, np.float32) @ q
    order = np.argsort(-sims, kind="stable")[: min(k, len(sims))]
    return order, sims[order]
