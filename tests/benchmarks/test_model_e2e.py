"""benchmarks/model_e2e.py on a CPU with a tiny Llama-style config (needs transformers): the capture stage
records the decoder's attention calls as one causal grouped-query class with its decode steps, and the compare
stage runs the same weights through SDPA and through an export, with identical logits and every attention call
on the kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.export import render_table
from evoforge.workload import read_toml
from tests.benchmarks import load_script

pytest.importorskip("transformers")

CAUSAL_SDPA = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        n_q, n_k = q.shape[-2], k.shape[-2]
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=q.shape[1] != k.shape[1])
'''


def test_capture_then_compare_on_a_tiny_decoder(tmp_path: Path) -> None:
    script = load_script("model_e2e")
    common = ["--preset", "tiny", "--device", "cpu", "--prefill", "1x16,2x8", "--decode-steps", "3",
              "--dir", str(tmp_path)]
    assert script.main(["--stage", "capture", *common]) == 0
    data = read_toml(tmp_path / "captured.toml")
    assert data["calls"] == data["covered_calls"] == 2 * 2 * (1 + 3)  # layers x prompts x (prefill + steps)
    [cls] = data["class"]
    assert (cls["head_dim"], cls["dtype"], cls["causal"]) == (32, "bf16", True)
    assert {(s["heads"], s["kv_heads"]) for s in cls["shape"]} == {(2, 1)}
    assert any(s["q_len"] == 1 for s in cls["shape"]) and any(s["q_len"] == 16 for s in cls["shape"])

    params = {"family": "attention", "batch": 1, "heads": 2, "kv_heads": 1, "seq_len": 16, "q_len": None,
              "head_dim": 32, "causal": True, "dtype": "bf16"}
    data = {"task": {"name": "tiny", "params": params}, "run": {"id": "tiny"},
            "device": {"device_type": "cpu", "device_name": "CPU"}}
    cand = Candidate(name="causal_sdpa", source=CAUSAL_SDPA, genome={"kind": "torch", "variant": "test"})
    kernel = tmp_path / "kernel.py"
    kernel.write_text(render_table([(cand, {"fitness": 1.0}, data)], '"""tiny"""'))
    out = tmp_path / "e2e.json"
    assert script.main(["--stage", "compare", "--kernel", str(kernel), "--reps", "1", "--out", str(out),
                        *common]) == 0
    record = json.loads(out.read_text())
    assert [(r["batch"], r["prompt_tokens"]) for r in record["rows"]] == [(1, 16), (2, 8)]
    for row in record["rows"]:
        assert row["identical_within_tolerance"] and row["kernel_share"] == 1.0
        assert row["attention_calls"]["kernel"] == 2 * (1 + 3) and row["attention_calls"]["fallback"] == 0
        assert row["prefill_tokens_per_s"]["evoforge"] > 0 and row["decode_tokens_per_s"]["sdpa"] > 0
