"""The helper kernels of experiments/floor.py and experiments/bandwidth.py do what their records say
(Triton's interpreter on a CPU, the compiled kernels on a GPU; tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import triton_device
from tests.experiments import load_script

pytest.importorskip("triton")


def test_stripped_kernels_copy_stream_and_multiply() -> None:
    floor = load_script("floor")
    device = triton_device()
    heads, n, d, block_m, block_n = 2, 32, 16, 16, 16
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, generator=gen).half().to(device) for _ in range(3))

    def run(work: int) -> torch.Tensor:
        out = torch.zeros_like(q)
        floor._stripped[(n // block_m, heads)](q, k, v, out, q.stride(1), q.stride(2), n, work, block_m, block_n, d,
                                               2, num_warps=4)
        return out.float().cpu()

    qf, kf, vf = q.float().cpu(), k.float().cpu(), v.float().cpu()
    assert torch.count_nonzero(run(0)) == 0  # programs that do nothing write nothing
    torch.testing.assert_close(run(1), qf)
    streamed = qf + (kf + vf).sum(dim=2, keepdim=True)  # every key row of the head folded in
    torch.testing.assert_close(run(2), streamed, atol=0.1, rtol=1e-2)
    products = (qf @ kf.transpose(-1, -2)).half().float() @ vf
    torch.testing.assert_close(run(3), products, atol=0.1, rtol=1e-2)


def test_read_kernel_sums_its_chunks() -> None:
    bandwidth = load_script("bandwidth")
    device = triton_device()
    block, iters, programs = 64, 4, 3
    x = torch.randn(block * iters * programs, generator=torch.Generator().manual_seed(1)).half().to(device)
    partial = torch.empty(programs, device=device)
    bandwidth._read[(programs,)](x, partial, block, iters)
    expected = x.float().cpu().view(programs, -1).sum(dim=1)
    torch.testing.assert_close(partial.cpu(), expected, atol=1e-2, rtol=1e-4)


def test_loaded_model_matches_sdpa_default() -> None:
    """evaluate_sources' helpers for scripts that time in their own process: a rendered kernel's
    ModelNew, and SDPA's paths on the same inputs (the default one runs anywhere)."""
    from evoforge.kernels.flash_attention import FlashGenome, render

    helpers = load_script("evaluate_sources")
    device = triton_device()
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 32, 16, generator=gen).to(device) for _ in range(3))
    model = helpers.load_model(render(FlashGenome(block_m=16, block_n=16), causal=False, head_dim=16), "helper_test")
    paths = helpers.sdpa_paths(q, k, v)
    assert set(paths) == {"sdpa_cudnn", "sdpa_flash", "sdpa_default"}
    torch.testing.assert_close(model(q, k, v), paths["sdpa_default"](), atol=2e-3, rtol=2e-3)
