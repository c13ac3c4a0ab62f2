"""Static int8 quantisation of an exported backbone, calibrated on the dataset's own images.

Two routes, one per runtime: ONNX Runtime's ``quantize_static`` (QDQ format) for the ``onnx``
backend, NNCF for the ``openvino`` backend. Both are deterministic for a given graph and
calibration set (min/max statistics over every calibration image, no random subset), so the
int8 file is cached and keyed by the fp32 export and the calibration images' key.

Dynamic quantisation is not used: it only touches MatMul/Gemm, which a CNN hardly has.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from capfuse.utils.io import atomic_path

# Conv layers kept in fp32: the first (it sees the normalised pixels, whose range the
# per-tensor activation scale represents worst) and the last (its output is the feature map
# the cache stores). Even so the pooled cosine to fp32 on the demo images stays under the
# 0.99 a default needs (make bench prints it), so int8 is a switch, not the default.
KEEP_FP32 = ("first", "last")


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser advises a pre-processing step through the root logger on every
    call; the exported graph is already optimised by the session that runs it."""
    quiet = logging.Filter("capfuse")  # passes only capfuse's records, and root's are not
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize_onnx(src: Path, dst: Path, batches: Callable[[], Iterable[np.ndarray]]) -> Path:
    """``src`` (fp32 ONNX, input ``x``) as a QDQ int8 graph at ``dst``, calibrated on ``batches``."""
    import onnx  # noqa: PLC0415 (only an int8 build needs it)
    from onnxruntime.quantization import (  # noqa: PLC0415 (seconds to import; only an int8 build needs it)
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches())

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {"x": np.ascontiguousarray(batch)}

    convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    exclude = ([convs[0]] if "first" in KEEP_FP32 else []) + ([convs[-1]] if "last" in KEEP_FP32 else [])
    with atomic_path(dst) as tmp, _quiet_root_logger():
        quantize_static(
            str(src),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            # AVX2 without VNNI multiplies u8 x s8 pairs into int16 and can saturate; 7-bit
            # weights cannot (onnxruntime's own advice for such CPUs).
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
        )
    return dst


def quantize_openvino(core, src: Path, dst: Path, batches: Callable[[], Iterable[np.ndarray]]) -> Path:
    """``src`` (fp32 ONNX) as an OpenVINO int8 model at ``dst`` (``.xml`` + ``.bin``), by NNCF."""
    try:
        import nncf  # noqa: PLC0415 (optional, seconds to import; only an OpenVINO int8 build needs it)
    except ImportError as exc:
        raise ImportError("image_encoder.precision: int8 with backend openvino needs NNCF: pip install nncf") from exc
    import openvino as ov  # noqa: PLC0415 (optional runtime; the caller has checked it is installed)

    nncf.set_log_level(logging.ERROR)  # its per-layer notes would drown the command's own output
    model = core.read_model(str(src))
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    keep = ([convs[0]] if "first" in KEEP_FP32 else []) + ([convs[-1]] if "last" in KEEP_FP32 else [])
    images = [row[None] for batch in batches() for row in batch]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(images),
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
    )
    # Saved into a scratch folder beside ``dst``, then the weights and the graph renamed into
    # place, the graph last: its presence is what says the pair is complete.
    scratch = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", dir=dst.parent))
    try:
        ov.save_model(quantized, str(scratch / dst.name), compress_to_fp16=False)
        os.replace(scratch / dst.with_suffix(".bin").name, dst.with_suffix(".bin"))
        os.replace(scratch / dst.name, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dst
