"""One Gluon genome's GPU cases, in a process of its own (``tests/kernels/test_gluon_flash.py`` runs it).

An illegal memory access poisons the CUDA context of the process that launched the kernel: every later CUDA
call in it fails too. So the test runs each genome here, in a child process, and reads back one JSON line per
shape: ``{"shape": ..., "status": "ok" | "skipped" | "failed", "detail": ...}``. The checks are the test's:
the output's shape, dtype and finiteness, then ``torch.testing.assert_close`` against a float64 reference
(2e-2 for bf16, 4e-3 for fp16), on the compiled kernel's first and second launch. After a CUDA error the
process stops (the later shapes would only repeat it); the test reports the shapes it never reached.

    python3 tests/kernels/gluon_gpu_worker.py '{"genome": {...}, "shapes": {...}, "out": "cases.jsonl"}'

``shapes`` maps a label to ``[batch, heads, kv_heads, n_q, n_k, head_dim, dtype name, causal]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

from evoforge.kernels import gluon_flash as gf
from evoforge.kernels.flash_attention import HardwareLimits
from evoforge.task import import_source


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if causal:
        n_q, n_k = s.shape[-2:]
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(n_k - n_q)
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def check(g: gf.GluonGenome, label: str, shape: list[Any], tmp: Path) -> str | None:
    """Runs one case; raises on a wrong result. Returns why it was skipped, or None when it ran."""
    batch, heads, kv_heads, n_q, n_k, head_dim, dtype_name, causal = shape
    dtype = getattr(torch, dtype_name)
    limits = HardwareLimits.for_device(torch.cuda.get_device_properties(0))
    # The GPU test runs the loop without warp specialisation too: the search is not offered it yet.
    why = gf.fits(g, head_dim, 2, limits, allow_pipelined=True, allow_pingpong=True,
                   allow_persistent=True)
    if why is not None:
        return f"not proposed here: {why}"
    name = f"gluon_{g.key()}_{label.replace('-', '_')}"
    model = import_source(gf.render(g, causal=causal, head_dim=head_dim), name, name, tmp).ModelNew()
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, heads, n_q, head_dim, device="cuda", dtype=dtype, generator=gen)
    k = torch.randn(batch, kv_heads, n_k, head_dim, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn(batch, kv_heads, n_k, head_dim, device="cuda", dtype=dtype, generator=gen)
    expected = reference(q, k, v, causal)
    for _ in range(2):  # the compiled kernel's second launch too
        got = model(q, k, v)
        torch.cuda.synchronize()
        assert got.shape == q.shape and got.dtype == dtype and torch.isfinite(got).all()
        tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
        torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)
    return None


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    g = gf.GluonGenome.from_dict(job["genome"])
    out = Path(job["out"])
    with tempfile.TemporaryDirectory() as tmpdir, out.open("a") as lines:
        for label, shape in job["shapes"].items():
            record: dict[str, Any] = {"shape": label}
            try:
                skipped = check(g, label, shape, Path(tmpdir))
                record.update(status="skipped" if skipped else "ok", detail=skipped or "")
            except Exception as exc:  # recorded for the test to report
                record.update(status="failed", detail="".join(traceback.format_exception(exc))[-4000:])
            lines.write(json.dumps(record) + "\n")
            lines.flush()
            if record["status"] == "failed" and "CUDA error" in record["detail"]:
                return 3  # the context is poisoned: the later shapes would only repeat this error
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
