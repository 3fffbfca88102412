"""Device and dtype choice for local models: CUDA when present, half precision there."""

from __future__ import annotations

from typing import Any


def pick_device(setting: str) -> str:
    import torch

    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(setting: str, device: str) -> Any:
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def gpu_memory(device: str) -> dict[str, int]:
    import torch

    index = torch.device(device).index or 0
    free, total = torch.cuda.mem_get_info(index)
    return {
        "allocated_bytes": int(torch.cuda.memory_allocated(index)),
        "reserved_bytes": int(torch.cuda.memory_reserved(index)),
        "used_bytes": int(total - free),
        "total_bytes": int(total),
    }


def gpu_name(device: str) -> str:
    import torch

    return str(torch.cuda.get_device_name(torch.device(device).index or 0))
