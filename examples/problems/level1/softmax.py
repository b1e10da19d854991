"""Level 1: row softmax."""
import torch
import torch.nn as nn

NAME = "softmax_rows"
ROWS, COLS = 128, 1024


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    return [torch.randn(ROWS, COLS)]


def get_init_inputs():
    return []
