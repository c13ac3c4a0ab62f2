"""The deployed projector on disk: ``runs/<dataset>/zeroshot/``, weights and a JSON sidecar.

``save_model`` writes ``model.safetensors`` then ``meta.json`` (what feeds the projector: its
encoders, settings, classes and the fingerprint of the run that trained it); ``load_model``
rebuilds the ``ZeroShotNet`` from both. The zeroshot stage writes the folder; the
``zeroshot-score``, ``embeddings`` and ``search`` commands read it.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from capfuse.paths import Paths
from capfuse.utils.io import atomic_path, read_json, write_json
from capfuse.zeroshot.model import ZeroShotNet
from capfuse.zeroshot.settings import ZeroShotSettings

MODEL_FILE, META_FILE = "model.safetensors", "meta.json"


def model_dir(paths: Paths) -> Path:
    """Where a data set's deployed projector lives."""
    return paths.runs / "zeroshot"


def save_model(folder: Path, net: ZeroShotNet, meta: dict) -> None:
    """``model.safetensors`` then ``meta.json`` (written last: it vouches for the weights)."""
    folder = Path(folder)
    (folder / META_FILE).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(folder / MODEL_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(folder / META_FILE, meta)


def load_model(folder: Path) -> tuple[ZeroShotNet, dict]:
    """The projector saved by ``save_model`` (eval mode) and its sidecar."""
    folder = Path(folder)
    meta_file = folder / META_FILE
    if not meta_file.exists() or not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(
            f"no zero-shot model in {folder} (need {MODEL_FILE} and {META_FILE}): "
            "run `make zeroshot` (capfuse zeroshot) first"
        )
    meta = read_json(meta_file)
    settings = ZeroShotSettings.from_config({"zeroshot": meta["settings"]})
    state = load_file(str(folder / MODEL_FILE))
    label_text = state.get("label_text")
    net = ZeroShotNet(meta["img_dim"], meta["text_dim"], settings, label_text)
    net.load_state_dict(state)
    return net.eval(), meta
