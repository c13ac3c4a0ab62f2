"""Where a frozen encoder runs on a CPU: ONNX Runtime, OpenVINO or eager torch, in fp32 or int8.

Image backbones take uint8 NHWC batches (scaling and normalisation are inside the exported
graph); the ONNX export is cached under ``export_dir`` and keyed by the module's tensors, and an
int8 graph is cached beside it, keyed by that export and the calibration images
(``capfuse.encoders.quantize``). The caption encoder goes through the same export and session
code (``TextRunner``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capfuse.encoders.quantize import quantize_onnx, quantize_openvino
from capfuse.utils.io import atomic_path
from capfuse.utils.log import log

BACKENDS = ("onnx", "openvino", "torch")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Calibration:
    """The images an int8 graph is calibrated on: ``key`` names them (ids and file stats), and
    ``batches`` yields them as the runner's inputs (uint8 NHWC)."""

    key: str
    batches: Callable[[], Iterable[np.ndarray]]


def check_choice(backend: str, precision: str, *, torch_runs_fp32: bool = False) -> None:
    """Known names; int8 with eager torch only where the caller runs torch in fp32 instead
    (the feature cache: int8 is a CPU runtime's setting, and torch is the GPU path)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend == "torch" and precision != "fp32" and not torch_runs_fp32:
        raise ValueError("precision int8 needs backend onnx or openvino (eager torch runs fp32 only)")


def import_openvino():
    """The ``openvino`` module, or an error that says how to install it (an optional dependency)."""
    try:
        import openvino  # noqa: PLC0415 (optional runtime, seconds to import; only the openvino backend needs it)
    except ImportError as exc:
        raise ImportError(
            "image_encoder.backend: openvino needs OpenVINO: pip install openvino nncf "
            "(or use backend: onnx, the default)"
        ) from exc
    return openvino


def ort_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation and no idle spinning."""
    import onnxruntime as ort  # noqa: PLC0415 (seconds to import; only the ONNX backends need it)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT workers would otherwise spin between batches and take the core that the
    # decoding thread needs (measured: +~10 % images/s end to end on 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(
    module: torch.nn.Module, example: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict
) -> Path:
    """``module`` as an ONNX file at ``path`` (written atomically; an existing file is reused)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # The exporter's notes (its own deprecation, tracer caveats that do not apply to these
        # fixed graphs) would otherwise be printed at every first run of a stage.
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                example,
                str(tmp),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
    return path


class ImageRunner:
    """Runs a frozen backbone (``FeatureMap``-like: uint8 ``[B, H, W, 3]`` in, maps out) on the
    chosen backend and precision; returns a list of float32 arrays, one per output."""

    def __init__(
        self,
        model: torch.nn.Module,
        size: int,
        *,
        backend: str,
        precision: str = "fp32",
        export_dir: Path,
        tag: str,
        n_outputs: int = 1,
        calibration: Calibration | None = None,
    ) -> None:
        check_choice(backend, precision)
        self.model, self.n_outputs, self.backend = model, n_outputs, backend
        self._run: Callable[[np.ndarray], list[np.ndarray]] | None = None
        if backend == "torch":
            return
        names = [f"y{i}" for i in range(n_outputs)]
        onnx_path = export_onnx(
            model,
            (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
            export_dir / f"{tag}.onnx",
            ["x"],
            names,
            {"x": {0: "n"}} | {y: {0: "n"} for y in names},
        )
        if precision == "int8" and calibration is None:
            raise ValueError("precision int8 needs calibration images")
        if backend == "onnx":
            path = onnx_path
            if precision == "int8":
                path = export_dir / f"{tag}-int8-{calibration.key[:16]}.onnx"
                if not path.exists():
                    log.info("calibrating int8 %s on its calibration images", tag)
                    quantize_onnx(onnx_path, path, calibration.batches)
            session = ort_session(path)
            self._run = lambda x: session.run(None, {"x": x})
        else:
            ov = import_openvino()
            core = ov.Core()
            if precision == "int8":
                path = export_dir / f"{tag}-int8ov-{calibration.key[:16]}.xml"
                if not path.exists():
                    log.info("calibrating int8 %s (OpenVINO) on its calibration images", tag)
                    quantize_openvino(core, onnx_path, path, calibration.batches)
                ov_model = core.read_model(str(path))
            else:
                ov_model = core.read_model(str(onnx_path))
            compiled = core.compile_model(
                ov_model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
            )
            request = compiled.create_infer_request()

            def run(x: np.ndarray) -> list[np.ndarray]:
                request.infer({0: x})
                # Copied: the request's buffers are overwritten by its next call.
                return [np.array(request.get_output_tensor(i).data) for i in range(n_outputs)]

            self._run = run

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x)
        if self._run is not None:
            return list(self._run(x))
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x))
        return [t.float().numpy() for t in (y if isinstance(y, tuple) else (y,))]


class _LastHidden(torch.nn.Module):
    """A transformers encoder as a plain function of its token tensors (what ONNX exports)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors))).last_hidden_state


class TextRunner:
    """A frozen transformers caption encoder through ONNX Runtime (fp32): token arrays in, the
    last hidden states ``[B, L, D]`` out. Exported once per weights (keyed by their checksum)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], export_dir: Path, tag: str) -> None:
        self.names = tuple(names)
        example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in self.names)
        dynamic = {name: {0: "n", 1: "len"} for name in self.names} | {"hidden": {0: "n", 1: "len"}}
        path = export_onnx(
            _LastHidden(model, self.names).eval(),
            example,
            export_dir / f"{tag}.onnx",
            list(self.names),
            ["hidden"],
            dynamic,
        )
        self.session = ort_session(path)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in batch.items() if k in self.inputs}
        return self.session.run(None, feed)[0]
