"""The instruction-set caps that imitate a weaker CPU on a stronger one.

``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` lower what torch's and oneDNN's kernels use
below what the CPU offers. Both the machine record of a results file and capfuse's own choice of
bf16 autocast on a CPU read them here: under ``ONEDNN_MAX_CPU_ISA=AVX2`` an AVX-512 BF16 CPU
must train in fp32, as a real AVX2 CPU does, or the imitation measures bf16 emulated in AVX2
kernels, a path no real machine takes.
"""

from __future__ import annotations

from collections.abc import Mapping

# The instruction-set words, weakest first; a level is an index into this tuple. "avx512-bf16"
# is the one that matters most here: from there on bf16 autocast computes natively on a CPU.
# "amx-bf16" (Intel's tile unit, Sapphire Rapids and later) multiplies bf16 matrices on a unit
# of its own, at another speed, so a results file from such a CPU must not read like one without.
ISA_WORDS = ("other", "avx2", "avx512", "avx512-bf16", "amx-bf16")
# What each cap lets torch or oneDNN use at most, as a level of ISA_WORDS. ATen's "avx512"
# kernels do not stop oneDNN's bf16 ones, so it caps nothing on the words' scale.
_ATEN_CAPS = {"default": 0, "avx2": 1, "avx512": len(ISA_WORDS) - 1}
_ONEDNN_CAPS = {
    "SSE41": 0,
    "AVX": 0,
    "AVX2": 1,
    "AVX2_VNNI": 1,
    "AVX2_VNNI_2": 1,
    "AVX512_CORE": 2,
    "AVX512_CORE_VNNI": 2,
    "AVX512_CORE_BF16": 3,
    "AVX512_CORE_FP16": 3,
    "AVX10_1_512": 3,
}  # any other value (the AMX ones, ALL, DEFAULT) leaves the whole CPU in reach


def cap_level(env: Mapping[str, str]) -> int | None:
    """The lowest level the cap variables in ``env`` allow; None when neither is set."""
    levels = []
    aten = env.get("ATEN_CPU_CAPABILITY")
    if aten is not None:
        levels.append(_ATEN_CAPS.get(aten.strip().lower(), len(ISA_WORDS) - 1))
    onednn = env.get("ONEDNN_MAX_CPU_ISA")
    if onednn is not None:
        levels.append(_ONEDNN_CAPS.get(onednn.strip().upper(), len(ISA_WORDS) - 1))
    return min(levels) if levels else None


def bf16_capped(env: Mapping[str, str]) -> bool:
    """True when a cap variable keeps native bf16 out of reach."""
    level = cap_level(env)
    return level is not None and level < ISA_WORDS.index("avx512-bf16")
