"""Level 1: layer normalisation with learned scale and shift."""
import torch
import torch.nn as nn

NAME = "layernorm_512"
ROWS, HIDDEN = 64, 512


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def get_inputs():
    return [torch.randn(ROWS, HIDDEN)]


def get_init_inputs():
    return [HIDDEN]
