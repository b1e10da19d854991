"""Level 2: linear layer followed by GELU (a fusable epilogue)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "matmul_bias_gelu"
BATCH, IN, OUT = 64, 256, 512


class Model(nn.Module):
    def __init__(self, features_in: int, features_out: int):
        super().__init__()
        self.linear = nn.Linear(features_in, features_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x))


def get_inputs():
    return [torch.randn(BATCH, IN)]


def get_init_inputs():
    return [IN, OUT]
