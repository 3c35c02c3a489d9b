"""Measurements a benchmark and the planner share: peak memory of this process, memory the
device has free, and the matmul throughput the device reaches.

On Linux the CPU peak is the kernel's own high-water mark of resident memory (VmHWM), reset
after the model is loaded by writing 5 to /proc/self/clear_refs, so the peak is that of
training, not of loading (a GGUF load briefly holds the packed and the dequantised weights).
That reset also lowers the process's `ru_maxrss` (what `wait4` and `/usr/bin/time -v` report
at exit), so the mark before it is kept (`PeakMemory.before`): the whole-process peak is the
larger of the two. Elsewhere a sampling thread reads the RSS every 5 ms (psutil).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory from `start()` to `stop()`: RSS on the CPU, allocated memory on CUDA/MPS."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self._sampled = 0
        self._thread: threading.Thread | None = None
        self._running = False
        self.before = 0
        """The process's peak RSS before `start()` reset it (CPU on Linux; else 0)."""

    def start(self) -> None:
        import torch

        if self.device_type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif self.device_type == "cpu" and _CLEAR_REFS.exists():
            self.before = _high_water()
            _CLEAR_REFS.write_text("5")
        else:
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while self._running:
            self._sampled = max(self._sampled, self._current())
            time.sleep(0.005)

    def _current(self) -> int:
        import torch

        if self.device_type == "mps":
            return torch.mps.driver_allocated_memory()
        return rss_bytes()

    def stop(self) -> int:
        """The peak in bytes since start()."""
        import torch

        if self.device_type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        if self._thread is None:
            return _high_water()
        self._running = False
        self._thread.join()
        return self._sampled


def _high_water() -> int:
    """The kernel's resident-memory high-water mark of this process (VmHWM), in bytes."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def device_base_bytes(device_type: str) -> int:
    """Memory in use before the model loads, subtracted from the peak (the Python process,
    torch and transformers on the CPU; nothing on a GPU)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.memory_allocated()
    if device_type == "mps":
        return torch.mps.driver_allocated_memory()
    return rss_bytes()


def available_bytes(device) -> int:
    """Memory a training run can still use on `device`."""
    import psutil
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return psutil.virtual_memory().available


def matmul_flops(device, dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a square `size` matmul in `dtype`: the peak the MFU is taken against."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    _sync(device)
    a @ b  # first call: kernel selection, thread pool start
    _sync(device)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
        _sync(device)
    return 2 * size**3 * runs / (time.perf_counter() - started)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()
