"""``evoforge doctor``: what this machine can run, checked by running it.

- ``diagnose(device)``: the report the command prints (``cli.tools.doctor``): the environment
  (``envinfo.collect``), which attention paths run (``attention_backends``: each SDPA backend, FlexAttention
  and Triton, once on a tiny fp16 problem), the sandbox's layers (``sandbox_report``), where workers get their
  Python bytecode (``cache.bytecode_status``), and notes (no CUDA: CPU timings, Triton interpreted).
- ``_try``: a check that fails is reported as ``unavailable: <its first line>``; doctor never fails itself.

A command module: it sits above the evaluator (``evaluator.sandbox``) and the leaf mechanisms it asks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from evoforge import envinfo


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _try(fn: Any) -> str:
    try:
        fn()
        return "runs"
    except Exception as exc:  # doctor reports, it does not fail
        text = str(exc).strip().splitlines()
        return "unavailable: " + (text[0] if text else type(exc).__name__)  # the whole first line, never cut


def attention_backends(device: torch.device) -> dict[str, str]:
    """Run each SDPA backend, FlexAttention and Triton once on a tiny fp16 problem."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.float16
    q, k, v = (torch.randn(1, 2, 128, 64, dtype=dtype, device=device) for _ in range(3))

    def sdpa(backend: Any) -> Any:
        def run() -> None:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, k, v)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return run

    states = {
        "sdpa_default": _try(lambda: F.scaled_dot_product_attention(q, k, v)),
        "sdpa_flash": _try(sdpa(SDPBackend.FLASH_ATTENTION)),
        "sdpa_mem_eff": _try(sdpa(SDPBackend.EFFICIENT_ATTENTION)),
        "sdpa_cudnn": _try(sdpa(SDPBackend.CUDNN_ATTENTION)),
        "sdpa_math": _try(sdpa(SDPBackend.MATH)),
    }

    def flex() -> None:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401

    states["flex_attention (import)"] = _try(flex)

    def triton_import() -> None:
        import triton  # noqa: F401

    states["triton (import)"] = _try(triton_import)
    return states


def diagnose(device_name: str = "auto") -> dict[str, Any]:
    device = _device(device_name)
    notes = []
    if device.type != "cuda":
        notes.append("no CUDA device: timings are CPU timings (perf_counter_ns), graph mode is unavailable, "
                     "and Triton kernels only run under TRITON_INTERPRET=1")
    from evoforge.cache import bytecode_status

    return {"env": envinfo.collect(device), "backends": attention_backends(device), "notes": notes,
            "sandbox": sandbox_report(), "worker_bytecode": bytecode_status()}


def sandbox_report() -> dict[str, Any]:
    """What --sandbox basic gets on this machine, layer by layer, with one line each for people."""
    from evoforge.evaluator import sandbox

    network = sandbox.network_isolation_unavailable()
    writes = sandbox.write_restriction_unavailable()
    processes = sandbox.process_cap_unavailable()
    extras = sandbox.landlock_extras() if writes is None else []
    lines = [
        "network: " + ("own network namespace (no network, not even loopback)" if network is None
                       else f"NOT isolated ({network}); --sandbox strict refuses to run"),
        "writes: " + (f"confined by Landlock ABI {sandbox.landlock_abi()} to the scratch directory, /dev, /proc "
                      "and the compiler caches" + (f"; also blocked: {', '.join(extras)}" if extras else "")
                      if writes is None else f"NOT confined ({writes}); --sandbox strict refuses to run"),
        "processes: " + ("capped by a pids cgroup" if processes is None
                         else f"capped by a watchdog counting descendants ({processes})"),
    ]
    return {"network_isolated": network is None, "reason": network,
            "writes_restricted": writes is None, "writes_reason": writes,
            "process_cap": "cgroup" if processes is None else "watchdog", "process_cap_reason": processes,
            "landlock_abi": sandbox.landlock_abi(), "lines": lines}
