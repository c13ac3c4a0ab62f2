"""The ``zeroshot:`` config block as one frozen dataclass, and the choices it may name.

Every other module of the package reads its switches from ``ZeroShotSettings``; it imports
nothing but the standard library, so the config schema can load it without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# CLIP's prompt plus a few paraphrases, averaged: one template's wording matters less. Chosen
# before any score was seen, not tuned on the evaluation images.
PROMPTS = ("a photo of a {name}.", "a picture of a {name}.", "there is a {name} in the scene.", "a {name}.")
PROJECTOR_KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class ZeroShotSettings:
    """The ``zeroshot:`` block of a config (``configs/zeroshot.yaml``), flattened: its groups
    ``projector``, ``loss``, ``train`` and ``eval`` hold the fields below; every default is here,
    with its reason."""

    # The models' backbone and caption encoder with their cache keys: the features the models
    # cached are reused, nothing is embedded again.
    image_encoder: dict = field(default_factory=lambda: {"name": "tf_efficientnet_lite0"})
    caption_encoder: dict = field(default_factory=lambda: {"name": "minilm", "max_len": 24})
    unseen: int | list = 6  # classes held out as unseen, drawn by the config's seed; or a list of names
    min_positives: int = 20  # a drawn unseen class needs this many train positives, or its AP is noise
    prompts: tuple[str, ...] = PROMPTS  # averaged per label; written before any score was seen
    # projector: linear or mlp (one hidden layer). Linear: as good as the MLP within noise on
    # the demo's cross-fitted scores, and faster.
    kind: str = "linear"
    hidden: int = 512  # mlp only: between Lite0's 1280 and MiniLM's 384
    dropout: float = 0.1  # a few thousand images: a little regularisation
    tokens: bool = False  # MKT's local stream (a learned query over the 4x4 grid): no better on the demo, 3x the time
    temperature: float = 0.07  # CLIP's initial InfoNCE temperature
    learn_temperature: bool = True  # as CLIP: learned, its scale capped at 100
    label_weight: float = 0.5  # weight of the seen-label term (0: captions only); unseen labels never enter it
    label_loss: dict = field(  # MuMIC's hardness-aware sigmoid BCE
        default_factory=lambda: {"name": "tempered_bce", "temperature": 1.0, "gamma": 1.0}
    )
    epochs: int = 30  # the training loss flattens before this on the demo; no early stopping on eval rows
    batch_size: int = 256  # more in-batch negatives help InfoNCE; still about ten steps an epoch on the demo
    lr: float = 1e-3
    weight_decay: float = 1e-4
    flip: bool = True  # a cached horizontally flipped view per image: free augmentation
    tta: bool = True  # embeddings average the original and flipped views
    eval_folds: str | list = "all"  # every fold held out in turn (cross-fitted); or a list such as [0]
    random_seeds: int = 10  # the random scorer's metrics are averaged over this many draws

    @classmethod
    def from_config(cls, cfg: dict) -> ZeroShotSettings:
        """Flatten ``zeroshot: {projector: {...}, loss: {...}, train: {...}, eval: {...}}``."""
        block = dict(cfg.get("zeroshot") or {})
        flat: dict = {}
        for group in ("projector", "loss", "train", "eval"):
            sub = block.pop(group, None) or {}
            if not isinstance(sub, dict):
                raise ValueError(f"zeroshot.{group} must be a mapping, got {sub!r}")
            flat.update(sub)
        flat.update(block)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"unknown zeroshot keys {unknown}; known: {sorted(known)}")
        if "prompts" in flat:
            flat["prompts"] = tuple(flat["prompts"])
        settings = cls(**flat)
        settings.check()
        return settings

    def check(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"zeroshot.projector.kind must be one of {PROJECTOR_KINDS}, got {self.kind!r}")
        if not self.prompts or any("{name}" not in p for p in self.prompts):
            raise ValueError(f"zeroshot.prompts must be templates holding {{name}}, got {list(self.prompts)}")
        if self.temperature <= 0 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("zeroshot: temperature > 0, epochs >= 1 and batch_size >= 2 are required")
        if self.label_weight < 0:
            raise ValueError(f"zeroshot.loss.label_weight must be >= 0, got {self.label_weight}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["prompts"] = list(self.prompts)
        return out
