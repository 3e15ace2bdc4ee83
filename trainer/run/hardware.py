"""What a run ran on, for the run's summary and dashboard: comparing throughput needs the hardware beside it."""

import os
import platform
import socket

import torch


def describe(device: torch.device, world_size: int) -> dict:
    """Plain strings and numbers (JSON and wandb summary friendly) for rank 0's device and host."""
    info = {"world_size": world_size, "device_type": device.type, "hostname": socket.gethostname(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count() or 0, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, device_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda or "", cudnn=torch.backends.cudnn.version() or 0)
    else:
        info["device_name"] = info["cpu_model"]
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
