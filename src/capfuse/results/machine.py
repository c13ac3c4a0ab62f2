"""What machine a measurement was made on: the fields every results file carries, and its slug.

A figure (a time, a throughput, even a score: bf16 and fp32 runs of one config differ) means
nothing without the machine behind it. The record says which commit ran, when, on which CPU,
with which instruction set torch really used, how many threads, and which GPU.

The instruction set is read twice: what the CPU offers (``/proc/cpuinfo`` flags) and what torch
dispatches to (``torch.backends.cpu.get_cpu_capability()``). ``ATEN_CPU_CAPABILITY`` and
``ONEDNN_MAX_CPU_ISA`` lower what torch and oneDNN use below what the CPU offers, which is how
an AVX2 machine is imitated on an AVX-512 one; a record made under either says so (``avx2
(capped)``), so a capped measurement is never mistaken for the machine's own.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from capfuse import __version__
from capfuse.utils.isa import ISA_WORDS, cap_level

CPUINFO = Path("/proc/cpuinfo")
CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")

# Words a CPU or GPU name starts with that say who made it, not what it is.
_VENDOR_WORDS = {"amd", "intel", "nvidia", "tesla", "geforce", "quadro", "radeon", "apple", "genuine", "authentic"}


@dataclass(frozen=True)
class Machine:
    """One machine's record, in the order a results file shows it."""

    commit: str  # the project's `git rev-parse HEAD`, "+dirty" when tracked files differ from it
    date: str  # UTC, ISO 8601 to the second
    cpu: str  # the model name in /proc/cpuinfo
    isa: str  # "amx-bf16" / "avx512-bf16" / "avx512" / "avx2" / "other", "(capped)" under a cap variable
    torch_isa: str  # torch.backends.cpu.get_cpu_capability(): what ATen's kernels dispatch to
    isa_cap: str  # the cap variables set, "NAME=value" joined by spaces; "" when none is
    bf16_native: bool  # capfuse's own choice: does finetune_options.amp autocast to bf16 on this CPU
    threads: int  # torch.get_num_threads()
    cores: int  # logical cores (os.cpu_count())
    ram_gb: float  # total memory, GiB
    # The 1-, 5- and 15-minute load averages when the file was written: above the core count, other
    # work shared the machine, and the times in the file are longer than it alone would take.
    load_avg: str
    gpu: str  # "NVIDIA H200 x1", or "none"
    gpu_memory_gb: float | None  # the first GPU's memory, GiB
    gpu_driver: str  # the NVIDIA driver (with nvidia-ml-py, the `gpu` extra), else the CUDA runtime torch was built for
    python: str
    torch: str
    capfuse: str

    def fields(self) -> dict:
        """Every field and the slug: the leading columns of a results file."""
        return {"slug": self.slug, **dataclasses.asdict(self)}

    @property
    def slug(self) -> str:
        return machine_slug(self)


# -- reading the machine ----------------------------------------------------------------------


def cpuinfo_fields(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo text; x86 says "flags", ARM "Features"."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "model", "hardware", "cpu model") and not model and not value.strip().isdigit():
            model = " ".join(value.split())
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


# The cpuinfo flag that says a CPU reaches a word of ISA_WORDS, strongest first.
_FLAG_WORDS = (("amx_bf16", "amx-bf16"), ("avx512_bf16", "avx512-bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def hardware_level(flags: set[str]) -> int:
    """The CPU's own level on ISA_WORDS, from its cpuinfo flags."""
    return next((ISA_WORDS.index(word) for flag, word in _FLAG_WORDS if flag in flags), 0)


def isa_word(flags: set[str], env: dict[str, str]) -> str:
    """``amx-bf16`` / ``avx512-bf16`` / ``avx512`` / ``avx2`` / ``other``; under a cap variable, the capped
    level and ``(capped)``, e.g. ``avx2 (capped)`` on an AVX-512 CPU with ATEN_CPU_CAPABILITY=avx2."""
    level = hardware_level(flags)
    cap = cap_level(env)
    if cap is None:
        return ISA_WORDS[level]
    return f"{ISA_WORDS[min(level, cap)]} (capped)"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path) -> str:
    """HEAD of the project at ``root``, "+dirty" when a tracked file differs; "unknown" outside git."""
    head = _git(root, "rev-parse", "HEAD")
    if not head:
        return "unknown"
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def _gpu() -> tuple[str, float | None, str]:
    """(name and count, memory in GiB, driver) of the GPUs torch sees; ("none", None, "") without."""
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "none", None, ""
    name = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    memory = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    driver = f"CUDA {torch.version.cuda}" if torch.version.cuda else ""
    try:
        import pynvml  # noqa: PLC0415 (optional: the `gpu` extra, only on GPU machines)

        pynvml.nvmlInit()
        driver = f"driver {pynvml.nvmlSystemGetDriverVersion()}, {driver}".rstrip(", ")
    except Exception:  # no nvidia-ml-py, or no NVML on this machine: the CUDA version alone
        pass
    return name, memory, driver


def _load_avg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not every platform keeps one
        return ""


def _ram_gb() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return float("nan")


def bf16_native() -> bool:
    """capfuse's own rule (``capfuse.models.finetune.amp_dtype_for``): does a net's bf16
    autocast compute natively on this CPU, or does the net train in fp32 here."""
    # Imported here: capfuse.models loads timm and transformers (seconds on a cold machine), and
    # only this answer needs them; `capfuse infer` alone never loads them.
    from capfuse.models.finetune import amp_dtype_for  # noqa: PLC0415 (heavy, needed for one answer)

    return amp_dtype_for(torch.device("cpu"), True) == torch.bfloat16


def machine_record(root: Path, *, commit: str | None = None, env: dict[str, str] | None = None) -> Machine:
    """This machine, now. ``commit``: the commit the figures belong to when it is not ``root``'s
    HEAD (a run collected after the checkout moved on: its manifest's commit)."""
    env = dict(os.environ) if env is None else env
    text = CPUINFO.read_text(encoding="utf-8", errors="replace") if CPUINFO.exists() else ""
    model, flags = cpuinfo_fields(text)
    gpu, gpu_memory, gpu_driver = _gpu()
    caps = " ".join(f"{name}={env[name]}" for name in CAP_VARIABLES if name in env)
    return Machine(
        commit=commit or git_commit(root),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        cpu=model or platform.processor() or platform.machine() or "unknown",
        isa=isa_word(flags, env),
        torch_isa=torch.backends.cpu.get_cpu_capability(),
        isa_cap=caps,
        bf16_native=bf16_native(),
        threads=torch.get_num_threads(),
        cores=os.cpu_count() or 0,
        ram_gb=_ram_gb(),
        load_avg=_load_avg(),
        gpu=gpu,
        gpu_memory_gb=gpu_memory,
        gpu_driver=gpu_driver,
        python=platform.python_version(),
        torch=torch.__version__,
        capfuse=__version__,
    )


# -- the slug in file names -------------------------------------------------------------------


def _short_name(name: str, *, gpu: bool = False) -> str:
    """The word of a CPU or GPU name that says what it is: "AMD EPYC 9654 96-Core Processor" ->
    "epyc"; for a GPU the words up to its number: "NVIDIA H200" -> "h200", "NVIDIA GeForce RTX
    4090" -> "rtx4090", "NVIDIA A100-SXM4-80GB" -> "a100"."""
    words = [re.sub(r"\((r|tm)\)", "", w, flags=re.IGNORECASE).split("-")[0] for w in name.split()]
    words = [w for w in words if w and w.lower() not in _VENDOR_WORDS]
    kept = words[:1]
    if gpu:
        digits = [i for i, w in enumerate(words[:2]) if any(ch.isdigit() for ch in w)]
        kept = words[: digits[0] + 1] if digits else words[:1]
    return re.sub(r"[^a-z0-9]", "", "".join(kept).lower()) or "unknown"


def machine_slug(m: Machine) -> str:
    """A short name for file names and table columns: ``epyc-avx512bf16-2t``,
    ``epyc-avx2capped-2t`` for a capped run, ``h200x1`` on a GPU machine."""
    if m.gpu != "none":
        name, _, count = m.gpu.rpartition(" x")
        return f"{_short_name(name, gpu=True)}x{count}"
    isa = re.sub(r"[^a-z0-9]", "", m.isa.lower())
    return f"{_short_name(m.cpu)}-{isa}-{m.threads}t"
