"""``capfuse bench --only top-stage``: training throughput of a backbone's top stage on its cached input.

The step that ``image_encoder.train_blocks`` adds to a fold (``capfuse.nn.fusion.TopBlocksNet``
over ``capfuse.encoders.image.BackboneTop``): forward from a random map of the cached ``mid``
shape, a loss on the pooled outputs, backward and an AdamW step, BatchNorm statistics kept, as a
fold trains it. Timed in fp32 and, where the CPU computes bf16 natively, under bf16 autocast;
each in the cached map's NCHW layout and in channels_last (what the pipeline uses). Rounds
alternate the variants; medians are printed, with what one epoch of a 30,000-row fold's fitting
rows (20,400) costs at that rate.
"""

from __future__ import annotations

import statistics
import time

import torch

from capfuse.encoders.image import BackboneTop, feature_maps
from capfuse.encoders.registry import build_image
from capfuse.models.finetune import cpu_has_bf16
from capfuse.nn.fusion import TopBlocksNet

FIT_ROWS_30K = 20_400  # a 30,000-row fold's fitting rows: 4/5 of them, less the 15 % inner split


def bench_top_stage(
    encoder: str = "tf_efficientnet_lite0", size: int = 224, batch: int = 256, steps: int = 3, rounds: int = 3
) -> dict:
    """Median rows/s of training steps per (precision, layout) on a random cached-size map."""
    backbone, _ = build_image(encoder)
    with torch.inference_mode():
        # The shape of the map entering the top stage at this size: one image through the rest.
        mid_map = feature_maps(backbone.eval(), torch.zeros(1, 3, size, size), (1,))[0]
    shape = (batch, *mid_map.shape[1:])
    precisions = {"fp32": None} | ({"bf16": torch.bfloat16} if cpu_has_bf16() else {})
    variants = [(p, layout) for p in precisions for layout in ("nchw", "channels_last")]
    seconds: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    gen = torch.Generator().manual_seed(0)
    mid = torch.randn(shape, generator=gen)
    for r in range(rounds):
        for precision, layout in variants if r % 2 == 0 else variants[::-1]:
            fresh, _ = build_image(encoder)
            net = TopBlocksNet(
                BackboneTop(fresh, 1),
                None,
                pooling="multilevel",
                amp_dtype=precisions[precision],
                channels_last=layout == "channels_last",
            ).train()
            opt = torch.optim.AdamW(net.top.parameters(), lr=1e-4)

            _step(net, opt, mid)  # warm-up: oneDNN picks and caches its kernels on the first call
            t0 = time.perf_counter()
            for _ in range(steps):
                _step(net, opt, mid)
            seconds[(precision, layout)].append((time.perf_counter() - t0) / steps)
    med = {v: statistics.median(s) for v, s in seconds.items()}
    return {
        "encoder": encoder,
        "size": size,
        "shape": shape,
        "rows_s": {v: batch / s for v, s in med.items()},
        "native_bf16": "bf16" in precisions,
    }


def _step(net: TopBlocksNet, opt: torch.optim.Optimizer, mid: torch.Tensor) -> None:
    loss = net.features({"img_mid": mid})["img_pooled"].pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def print_top_stage(r: dict) -> None:
    c, h, w = r["shape"][1:]
    print(
        f"top stage of {r['encoder']} @ {r['size']} px trained on its cached {c}x{h}x{w} input, batches of "
        f"{r['shape'][0]} (medians of alternating rounds):"
    )
    if not r["native_bf16"]:
        print("  no native bf16 on this CPU: the top stage trains in fp32 here")
    for precision in dict.fromkeys(p for p, _ in r["rows_s"]):
        nchw, cl = r["rows_s"][(precision, "nchw")], r["rows_s"][(precision, "channels_last")]
        print(
            f"  {precision}: NCHW {nchw:6.1f} rows/s, channels_last {cl:6.1f} rows/s ({cl / nchw:.2f}x); one epoch"
            f" of a 30,000-row fold ({FIT_ROWS_30K} rows) {FIT_ROWS_30K / cl:5.1f} s"
        )
