"""What this CPU can do, and the serving and training settings that are fastest on it.

bf16 has native kernels only on CPUs with AVX512_BF16 or AMX; elsewhere (AVX2-only machines: most laptops,
many cloud VMs) PyTorch emulates it, and vLLM's CPU engine then generated ~2.4x fewer tokens/s than in
float32 (31.5 vs 76.2 tok/s on a 2-core AMD EPYC, SmolLM2-135M, 16 concurrent requests). `auto` therefore
means bfloat16 where bf16 is native and float32 everywhere else. `benchmarks/cpu_serving.py` measures both.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: tuple[int, ...]  # the cores this process may run on

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in NATIVE_BF16_FLAGS)

    def shown_flags(self) -> list[str]:
        return [f for f in SHOWN_FLAGS if f in self.flags]


@dataclass(frozen=True)
class CpuChoice:
    """A dtype (and, for serving, the cores to bind) with the reason, for the log and the run report."""

    dtype: str
    reason: str
    threads_bind: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def read_cpu(cpuinfo: Path = CPUINFO) -> CpuInfo:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "model name" and value.strip():
            model = value.strip()
    return CpuInfo(model=model, flags=frozenset(flags), cores=_usable_cores())


def _usable_cores() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def core_ranges(cores: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2,5": the syntax of VLLM_CPU_OMP_THREADS_BIND."""
    parts: list[str] = []
    start = prev = None
    for c in cores:
        if start is None:
            start = prev = c
        elif c == prev + 1:  # type: ignore[operator]
            prev = c
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = c
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


def _bf16_reason(cpu: CpuInfo) -> tuple[str, str]:
    flags = ", ".join(cpu.shown_flags()) or "none of " + ", ".join(SHOWN_FLAGS)
    if cpu.native_bf16:
        return "bfloat16", f"native bf16 ({flags})"
    return "float32", f"no native bf16 kernels (flags: {flags}); bf16 would be emulated and slower"


def choose_serving(cpu: CpuInfo | None = None) -> CpuChoice:
    """vLLM CPU settings: dtype by the bf16 rule, OpenMP threads bound to every usable core."""
    cpu = cpu or read_cpu()
    dtype, reason = _bf16_reason(cpu)
    bind = core_ranges(cpu.cores)
    return CpuChoice(dtype=dtype, reason=f"{reason}; {len(cpu.cores)} core(s) on {cpu.model}", threads_bind=bind)


def choose_training(cpu: CpuInfo | None = None) -> CpuChoice:
    """CPU training precision by the same rule: bf16 mixed precision only where bf16 is native."""
    cpu = cpu or read_cpu()
    dtype, reason = _bf16_reason(cpu)
    return CpuChoice(dtype=dtype, reason=reason)


def has_gpu() -> bool:
    """An NVIDIA/AMD GPU driver is present: vLLM's own `auto` dtype is then the right choice."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists()
