"""What machine and software a number was measured on: recorded with every result.

- ``collect(device)``: device type and name, date, host, platform and ``versions()`` (Python, torch,
  Triton, CUDA, cuDNN); on CUDA also compute capability, SM count, memory, L2 size and the driver (from
  nvidia-smi). The evaluator attaches it to every report (``EvalReport.env``); sweeps, runs and reports
  carry it into their evidence.
- ``device_slug(name)``: a short name for result files (``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``).

A leaf mechanism: it imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from typing import Any

import torch


def _triton_version() -> str | None:
    try:
        import triton
    except Exception:
        return None
    return str(triton.__version__)


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()
    return line[0].strip() if out.returncode == 0 and line else None


def versions() -> dict[str, Any]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


def collect(device: torch.device | str) -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "device_type": device.type,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "versions": versions(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0),
            driver=_driver_version(),
        )
    else:
        info.update(device_name=f"CPU ({platform.processor() or platform.machine()})", driver=None)
    return info


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; a CPU -> 'cpu'. Used in result file names."""
    lowered = name.lower()
    for token in ("h200", "h100", "h20", "a100", "l40s", "l4", "b200", "gb200", "a10g", "t4", "rtx"):
        if token in lowered.split() or token in lowered.replace("-", " ").split():
            return token
    if lowered.startswith("cpu"):
        return "cpu"
    return "".join(ch if ch.isalnum() else "-" for ch in lowered).strip("-") or "device"
