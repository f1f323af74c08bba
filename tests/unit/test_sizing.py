"""workers.sizing: (cores, memory, device, model) -> (jobs at once, CPU threads per job)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.sizing import (
    CUDA_JOBS,
    MAX_CPU_JOBS,
    Machine,
    Plan,
    available_memory_mib,
    plan,
    usable_cores,
)

PLENTY = 64 * 1024


def nums(chosen: Plan) -> tuple[int, int]:
    return chosen.concurrency, chosen.cpu_threads


@pytest.mark.parametrize(
    ("cores", "jobs", "threads"),
    [
        (1, 1, 1),
        (2, 2, 1),  # the benchmarked best on 2 cores: 2 workers x 1 thread
        (4, 4, 1),
        (7, 7, 1),
        (8, 4, 2),
        (16, 8, 2),
        (32, MAX_CPU_JOBS, 4),
        (64, MAX_CPU_JOBS, 8),
    ],
)
def test_cpu_jobs_and_threads_follow_the_cores(cores: int, jobs: int, threads: int) -> None:
    chosen = plan(Machine(cores, PLENTY, "cpu", "base"))
    assert (chosen.concurrency, chosen.cpu_threads) == (jobs, threads)
    assert chosen.concurrency * chosen.cpu_threads <= cores


def test_cuda_runs_two_jobs_per_gpu_whatever_the_cores() -> None:
    for cores in (2, 16):
        chosen = plan(Machine(cores, PLENTY, "cuda", "base"))
        assert (chosen.concurrency, chosen.cpu_threads) == (CUDA_JOBS, 0)
        assert "GPU" in chosen.reason


def test_little_memory_cuts_the_jobs_and_gives_their_cores_to_the_rest() -> None:
    # 1 GiB available: half is 512 MiB; base (110) + 2 jobs of 200 MiB fit, not 3.
    chosen = plan(Machine(4, 1024, "cpu", "base"))
    assert (chosen.concurrency, chosen.cpu_threads) == (2, 2)
    assert chosen.reason.startswith("memory")


def test_never_fewer_than_one_job_even_without_memory() -> None:
    chosen = plan(Machine(2, 100, "cpu", "large-v3"))
    assert chosen.concurrency == 1
    assert chosen.cpu_threads == 2


def test_a_bigger_model_fits_fewer_jobs() -> None:
    small = plan(Machine(8, 4096, "cpu", "tiny.en"))
    large = plan(Machine(8, 4096, "cpu", "large-v3"))
    assert large.concurrency < small.concurrency
    # An unknown model (a local directory) is planned like a large one.
    unknown = plan(Machine(8, 4096, "cpu", "/models/my-finetune"))
    assert unknown.concurrency == large.concurrency


def test_explicit_numbers_win() -> None:
    machine = Machine(2, 100, "cpu", "base")
    assert nums(plan(machine, concurrency=3, cpu_threads=4)) == (3, 4)
    # Concurrency set, threads auto: the cores are shared among the jobs asked for.
    assert nums(plan(Machine(8, PLENTY, "cpu", "base"), concurrency=2)) == (2, 4)
    assert nums(plan(Machine(2, PLENTY, "cpu", "base"), concurrency=1)) == (1, 2)
    # Threads set, concurrency auto: the automatic concurrency stays.
    assert nums(plan(Machine(2, PLENTY, "cpu", "base"), cpu_threads=0)) == (2, 0)
    assert nums(plan(Machine(2, PLENTY, "cuda", "base"), concurrency=5)) == (5, 0)


def test_unknown_memory_is_not_a_limit() -> None:
    assert plan(Machine(4, None, "cpu", "large-v3")).concurrency == 4


def test_cores_come_from_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = usable_cores(tmp_path)  # no cgroup files: the affinity mask
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cores(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_memory_is_mem_available_lowered_by_the_cgroup_limit(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  4194304 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert available_memory_mib(meminfo, cgroup) == 4096
    (cgroup / "memory.max").write_text(f"{2 * 2**30}\n")
    (cgroup / "memory.current").write_text(f"{512 * 2**20}\n")
    assert available_memory_mib(meminfo, cgroup) == 1536
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory_mib(meminfo, cgroup) == 4096
    assert available_memory_mib(tmp_path / "missing", tmp_path / "none") is None


def test_this_machine_reads_something_sane() -> None:
    assert usable_cores() >= 1
    memory = available_memory_mib()
    assert memory is None or memory > 0
