"""Measured speed, because multiply-adds are not speed (Ma et al. 2018, ShuffleNet V2: memory access, degree
of parallelism and element-wise operations cost time that MACs do not count). One timer serves
`bigbatch models --speed`, the per-block latency table of `bigbatch search` and bench/guidelines.py.

A module is timed in eval mode without gradients: a few warm-up passes (allocator, cuDNN's choice of
algorithm, oneDNN's kernels), then repeated passes until `min_seconds` have passed and at least `repeats`
were timed; the median pass is the answer (robust to a neighbour process taking the core for a moment). On
CUDA the device is synchronized around every pass, so the time is the kernels', not the launch's.
"""

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn


def resolve_speed_device(name: str) -> torch.device:
    """'auto' -> cuda when there is one; 'cuda' without one is an error the caller reports."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device: {name!r} requested but no CUDA device is available")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What the figures were measured on, for tables and caches (the GPU's model; the CPU's and its threads)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, torch threads: {torch.get_num_threads()}"


def median_seconds(run: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5,
                   min_seconds: float = 0.2) -> float:
    """Median wall time of one call of `run` (see the module's docstring)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        for _ in range(warmup):
            run()
        sync()
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - started < min_seconds:
            begin = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def forward_seconds(module: nn.Module, input_shape: tuple[int, ...], device: torch.device, **timing) -> float:
    """Median seconds of one eval-mode forward pass of `module` on a random input of `input_shape`."""
    was_training = module.training
    module.eval()
    x = torch.randn(input_shape, device=device)
    try:
        return median_seconds(lambda: module(x), device, **timing)
    finally:
        module.train(was_training)


def images_per_second(module: nn.Module, batch: int, in_chans: int, resolution: int, device: torch.device,
                      **timing) -> float:
    """Inference throughput at `batch` images of `resolution` px (the lecture's images/s and batches/s)."""
    return batch / forward_seconds(module, (batch, in_chans, resolution, resolution), device, **timing)
