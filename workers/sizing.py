"""How many jobs one worker process transcribes at once, and with how many CPU threads each.

``asr.concurrency`` and ``asr.cpu_threads`` default to ``"auto"``; :func:`plan` turns the
machine (usable cores, available memory, device, model) into numbers. It is pure so
every branch is unit-tested; :func:`usable_cores` and :func:`available_memory_mib` read
the machine (cgroup quota and CPU affinity, not ``os.cpu_count()``, so a container
limited to 2 CPUs on a 64-core host plans for 2).

Why these numbers (bench/README.md, "Worker scaling"):

- CPU: one transcription keeps only ~1.4 cores busy (decoding, features, VAD and
  beam-search bookkeeping are serial), so on 2 cores two concurrent jobs with one
  CTranslate2 thread each were 1.9x a plain faster-whisper loop, and CTranslate2's own
  thread count oversubscribed by ~10 %. So: one thread per job on small machines (up to
  7 cores), two from 8 cores on (the matrix work then dominates the serial part), jobs
  = cores // threads. Jobs in one process share one model (CTranslate2 ``inter_threads``
  replicas share the weights) but also the GIL for the Python parts, so at most
  :data:`MAX_CPU_JOBS` per process; beyond that the threads per job grow instead (run
  more processes for more).
- CUDA: :data:`CUDA_JOBS` per GPU. The GPU does the model work in batches; a second job
  decodes audio, runs VAD and does the CPU side of its window while the first holds the
  GPU, so the GPU does not idle between windows. More would add GPU memory (a batch of
  activations each) and queueing on the one device, not throughput.
- Memory: every job holds a decoded window, its features and decoder state next to the
  one shared model; jobs are cut so that model + jobs stay within
  :data:`MEMORY_FRACTION` of available memory, never below one job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Resident memory of one loaded model (CTranslate2 int8 on CPU), measured with
# /proc/self/status VmRSS before and after WhisperModel(...): tiny.en +69 MiB, base
# +106 MiB. Others from their sizes (int8 is about half the float16 file).
MODEL_MIB: dict[str, int] = {
    "tiny": 75,
    "tiny.en": 75,
    "base": 110,
    "base.en": 110,
    "small": 300,
    "small.en": 300,
    "medium": 800,
    "medium.en": 800,
    "large": 1600,
    "large-v1": 1600,
    "large-v2": 1600,
    "large-v3": 1600,
    "turbo": 900,
    "large-v3-turbo": 900,
}
# An unknown model (a local directory, a hub id) is planned as a large one.
UNKNOWN_MODEL_MIB = 1600
# One job's working set: a decoded window (300 s of float32 at 16 kHz is 18 MiB), its
# features and the decoder state. Measured: one transcription of jfk.flac grew the RSS
# by 74 MiB (tiny.en) and 82 MiB (base); windows of 5 minutes need more.
JOB_MIB_MIN = 200
MEMORY_FRACTION = 0.5
MAX_CPU_JOBS = 8
CUDA_JOBS = 2

Device = Literal["cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class Machine:
    """What the plan depends on; ``memory_mib`` is MemAvailable (or the cgroup's limit)."""

    cores: int
    memory_mib: int | None
    device: Device
    model: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Jobs at once in this process and CPU threads per job (0 = CTranslate2's default)."""

    concurrency: int
    cpu_threads: int
    reason: str


def model_mib(model: str) -> int:
    """Resident memory of ``model`` loaded once; by name, else planned as a large one."""
    return MODEL_MIB.get(Path(model).name if "/" in model else model, UNKNOWN_MODEL_MIB)


def job_mib(model: str) -> int:
    return max(JOB_MIB_MIN, model_mib(model))


def memory_cap(memory_mib: int | None, model: str) -> int | None:
    """The most jobs whose memory, with the one shared model, fits the safe fraction."""
    if memory_mib is None:
        return None
    room = memory_mib * MEMORY_FRACTION - model_mib(model)
    return max(1, int(room // job_mib(model)))


def plan(
    machine: Machine,
    *,
    concurrency: int | Literal["auto"] = "auto",
    cpu_threads: int | Literal["auto"] = "auto",
) -> Plan:
    """The numbers for ``machine``; an explicit setting always wins over the automatic one."""
    cores = max(1, machine.cores)
    if machine.device == "cuda":
        jobs, threads, why = CUDA_JOBS, 0, f"{CUDA_JOBS} jobs keep one GPU busy"
    else:
        threads = 1 if cores < 8 else 2
        jobs = max(1, cores // threads)
        why = f"{threads} thread(s) per job, one job per {threads} core(s)"
        if jobs > MAX_CPU_JOBS:
            jobs, threads = MAX_CPU_JOBS, cores // MAX_CPU_JOBS
            why = f"{MAX_CPU_JOBS} jobs per process (GIL), cores shared among them"
    cap = memory_cap(machine.memory_mib, machine.model)
    if cap is not None and jobs > cap:
        jobs, why = cap, f"memory: {cap} job(s) of {job_mib(machine.model)} MiB fit"
        if machine.device == "cpu" and cpu_threads == "auto":
            threads = max(1, cores // jobs)
    if concurrency != "auto":
        jobs = concurrency
        why = "concurrency set" if cpu_threads != "auto" else why + "; concurrency set"
        if machine.device == "cpu" and cpu_threads == "auto":
            threads = max(1, cores // max(1, jobs))
    if cpu_threads != "auto":
        threads = cpu_threads
        why = "set" if concurrency != "auto" else why + "; cpu_threads set"
    return Plan(concurrency=jobs, cpu_threads=threads, reason=why)


# -- the machine ----------------------------------------------------------------------------


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, lowered by a cgroup v2/v1 CPU quota."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, int(quota + 0.5)))  # 1.5 CPUs plans as 2
    return max(1, cores)


def _cgroup_cpus(root: Path) -> float | None:
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_memory_mib(
    meminfo: Path = Path("/proc/meminfo"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """MemAvailable, lowered by a cgroup memory limit (minus what the cgroup already uses)."""
    available: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    try:
        limit = (cgroup_root / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup_root / "memory.current").read_text())
            room = (int(limit) - used) // 2**20
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available
