"""GPU memory as NVML sees it, for heartbeats and metrics; nothing when there is no GPU.

NVML numbers GPUs physically, CUDA numbers the ones ``CUDA_VISIBLE_DEVICES``
leaves visible; ``cuda:1`` under ``CUDA_VISIBLE_DEVICES=2,3`` is physical GPU 3.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GpuMemory:
    used_bytes: int
    total_bytes: int


class GpuMemoryProbe:
    """Reads one CUDA device's memory; ``read()`` is None when NVML is unavailable."""

    def __init__(self, cuda_index: int) -> None:
        self.cuda_index = cuda_index
        self._handle: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def read(self) -> GpuMemory | None:
        with self._lock:
            if self._failed:
                return None
            try:
                import pynvml
            except ImportError as exc:
                self._give_up(exc)
                return None
            try:
                if self._handle is None:
                    pynvml.nvmlInit()
                    self._handle = _device_handle(pynvml, self.cuda_index)
                info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            except (pynvml.NVMLError, OSError, IndexError) as exc:
                self._give_up(exc)
                return None
            return GpuMemory(used_bytes=int(info.used), total_bytes=int(info.total))

    def _give_up(self, exc: BaseException) -> None:
        self._failed = True
        log.info("GPU memory is not reported (NVML unavailable)", error=str(exc) or repr(exc))


def _device_handle(pynvml: Any, cuda_index: int) -> Any:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
    entry = visible.split(",")[cuda_index].strip()
    if entry.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
    return pynvml.nvmlDeviceGetHandleByUUID(entry)
