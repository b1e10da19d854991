"""Level 1: a single matrix product (KernelBench format)."""
import torch
import torch.nn as nn

NAME = "matmul_256"
M, K, N = 256, 256, 256
FLOPS = 2 * M * K * N


class Model(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
