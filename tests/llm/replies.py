"""Scripted model replies for the LLM tests: what a model might answer, good and bad."""

VALID_CODE = '''import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        scale = q.shape[-1] ** -0.5
        s = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
        return torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype)
'''


def reply(name: str, thought: str, code: str) -> str:
    return f"name: {name}\nthought: {thought}\n```python\n{code}```\n"


VALID = reply("fp32-math", "scores in fp32, one matmul each side", VALID_CODE)
# The same computation written differently: a second valid candidate with its own hash.
VALID_2 = reply("fp32-math-2", "same, softmax in place", VALID_CODE.replace("* scale", "* float(scale)"))
SYNTAX = reply("broken", "forgot a colon", "import torch\n\n\nclass ModelNew(torch.nn.Module)\n    pass\n")
NO_CODE = "name: chatty\nthought: let me explain instead\nI would rather describe the kernel than write it."
CHEAT = reply("cheat", "reuse the first output", '''import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.cache = None

    def forward(self, q, k, v):
        if self.cache is None:
            s = torch.matmul(q.float(), k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
            self.cache = torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype)
        return self.cache
''')
