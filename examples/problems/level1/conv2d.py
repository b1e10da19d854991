"""Level 1: a 3x3 convolution."""
import torch
import torch.nn as nn

NAME = "conv2d_3x3"
BATCH, C_IN, C_OUT, SIZE = 2, 8, 16, 16


class Model(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_inputs():
    return [torch.randn(BATCH, C_IN, SIZE, SIZE)]


def get_init_inputs():
    return [C_IN, C_OUT]
