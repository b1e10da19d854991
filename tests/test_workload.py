"""Capturing a program's attention calls (issue 21): `evoforge.capture()` and `evoforge capture -- COMMAND` record
every SDPA call into a task file whose shape classes `evoforge run --task captured.toml` evolves for; calls no
kernel can take are listed with why; bad files and commands are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import evoforge
from evoforge.export import load
from evoforge.resolve import resolve_task
from evoforge.shapes import shape_specs
from evoforge.task import TaskError, load_task
from evoforge.workload import read_toml
from tests.test_export import FAST, close, evoforge_cli, qkv, reference


def model_calls() -> None:
    """What a small causal decoder with a KV cache does: a prefill, decode steps, and a few calls no kernel takes."""
    q, k, v = qkv(s=64)
    F.scaled_dot_product_attention(q, k, v, is_causal=True)  # prefill
    for n in range(65, 69):  # decode steps over a growing cache: one bucket (keys up to 128)
        q1, k1, v1 = qkv(s=1, kv_len=n)
        F.scaled_dot_product_attention(q1, k1, v1)
    F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(64, 64, dtype=torch.bool))  # padding mask
    F.scaled_dot_product_attention(q.requires_grad_(), k, v, is_causal=True)  # training


def test_capture_records_the_calls_and_sdpa_still_computes_them(tmp_path: Path) -> None:
    original = F.scaled_dot_product_attention
    q, k, v = qkv(s=20)  # its own bucket: 64 keys and 20 are not within one power of two
    with evoforge.capture(tmp_path / "captured.toml") as recorder:
        assert F.scaled_dot_product_attention is not original
        close(F.scaled_dot_product_attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
        model_calls()
    assert F.scaled_dot_product_attention is original
    assert sum(r["calls"] for r in recorder.records()) == 8
    data = read_toml(tmp_path / "captured.toml")
    assert data["calls"] == 8 and data["covered_calls"] == 6
    # One class: the decode steps (one query, no mask) join the causal prefill's class.
    [cls] = data["class"]
    assert (cls["head_dim"], cls["dtype"], cls["causal"], cls["calls"]) == (32, "fp16", True, 6)
    shapes = {(s["q_len"], s["seq_len"]): s["calls"] for s in cls["shape"]}
    assert shapes == {(64, 64): 1, (1, 68): 4, (20, 20): 1}
    assert all(s["evolve"] for s in cls["shape"])  # three shapes, up to MAX_SHAPES are evolved on
    reasons = {u["reason"]: u["calls"] for u in data["unsupported"]}
    assert reasons == {"an attention mask": 1, "inputs that require grad (the kernels are forward-only)": 1}


def test_a_captured_class_is_a_multi_shape_task_of_the_shapes_marked_to_evolve(tmp_path: Path) -> None:
    path = tmp_path / "captured.toml"
    with evoforge.capture(path):
        model_calls()
    spec = resolve_task(str(path))
    shapes = [s.params for s in shape_specs(spec)]
    assert [(p["q_len"], p["seq_len"], p["causal"], p["head_dim"], p["dtype"]) for p in shapes] == \
        [(1, 68, True, 32, "fp16"), (64, 64, True, 32, "fp16")]  # 4 decode calls before 1 prefill's
    load_task(spec)
    text = path.read_text().replace("\nevolve = true", "\nevolve = false", 1)  # keep only the prefill shape
    path.write_text(text)
    single = resolve_task(str(path))
    assert not single.params.get("shapes") and single.params["q_len"] == 64 and single.params["seq_len"] == 64


def test_classes_split_by_what_a_kernel_is_specialised_for(tmp_path: Path) -> None:
    path = tmp_path / "captured.toml"
    with evoforge.capture(path):
        F.scaled_dot_product_attention(*qkv(d=64, s=16))
        F.scaled_dot_product_attention(*qkv(d=64, s=16))
        F.scaled_dot_product_attention(*qkv(s=16, dtype=torch.bfloat16), is_causal=True)
        q, k, v = qkv(h=4, kv_heads=2, s=1, kv_len=30)
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # decode, grouped-query: a class of its own
    classes = read_toml(path)["class"]
    found = [(c["head_dim"], c["dtype"], c["causal"], c["calls"]) for c in classes]
    assert found[0] == (64, "fp16", False, 2)  # the largest estimated attention time first
    assert set(found[1:]) == {(32, "bf16", True, 1), (32, "fp16", True, 1)}
    with pytest.raises(TaskError, match=r"holds 3 shape classes .*--task .*:N"):
        resolve_task(str(path))
    chosen = resolve_task(f"{path}:2")
    assert chosen.params["head_dim"] == classes[1]["head_dim"] and chosen.params["dtype"] == classes[1]["dtype"]
    with pytest.raises(TaskError, match="no class 4"):
        resolve_task(f"{path}:4")


def test_bad_captured_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.toml": None,
        "broken.toml": "[[class]\n",
        "empty.toml": "calls = 3\n[[unsupported]]\nreason = 'an attention mask'\ncalls = 3\n",
        "none.toml": "[[class]]\nhead_dim = 32\ndtype = 'fp16'\ncausal = false\n"
                     "[[class.shape]]\nbatch = 1\nheads = 2\nkv_heads = 2\nq_len = 8\nseq_len = 8\nevolve = false\n",
        "badint.toml": "[[class]]\nhead_dim = 32\ndtype = 'fp16'\ncausal = false\n"
                       "[[class.shape]]\nbatch = 0\nheads = 2\nkv_heads = 2\nq_len = 8\nseq_len = 8\n",
        "baddtype.toml": "[[class]]\nhead_dim = 32\ndtype = 'int8'\ncausal = false\n"
                         "[[class.shape]]\nbatch = 1\nheads = 2\nkv_heads = 2\nq_len = 8\nseq_len = 8\n",
        "badq.toml": "[[class]]\nhead_dim = 32\ndtype = 'fp16'\ncausal = false\n"
                     "[[class.shape]]\nbatch = 1\nheads = 2\nkv_heads = 2\nq_len = 9\nseq_len = 8\n",
    }
    expected = {"missing.toml": "no such captured workload", "broken.toml": "not a readable TOML file",
                "empty.toml": "no \\[\\[class\\]\\]", "none.toml": "no shape is marked evolve",
                "badint.toml": "`batch` must be a positive integer", "baddtype.toml": "dtype",
                "badq.toml": "q_len must be between 1 and seq_len"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(TaskError, match=expected[name]) as info:
            resolve_task(str(tmp_path / name))
        assert "\n" not in str(info.value), name


PROGRAM = '''
import torch
import torch.nn.functional as F

q, k, v = (torch.randn(1, 2, 48, 32).half() for _ in range(3))
out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
for n in range(49, 52):
    kk, vv = torch.randn(1, 2, n, 32).half(), torch.randn(1, 2, n, 32).half()
    F.scaled_dot_product_attention(q[:, :, :1], kk, vv)
F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(48, 48, dtype=torch.bool))
print("program done", out.shape[-1])
'''


def test_capture_run_export_the_three_lines_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "my_model.py").write_text(PROGRAM)
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITECUSTOMIZE'] = 'ran'\n")
    (tmp_path / "check_env.py").write_text("import os\nprint('own', os.environ.get('OWN_SITECUSTOMIZE'))\n")
    env_cmd = [sys.executable, "-m", "evoforge.cli", "capture", "-o", "captured.toml", "--",
               sys.executable, "my_model.py"]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(own)})
    assert proc.returncode == 0, proc.stderr
    assert "program done 32" in proc.stdout and "recorded 5 attention calls in 1 process" in proc.stdout
    assert "4 (80%) can run an evolved kernel" in proc.stdout and "SDPA stays: 1 call with an attention mask" \
        in proc.stdout and "next: evoforge run --task captured.toml" in proc.stdout
    # The program's own sitecustomize still runs under the capture's.
    proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "capture", "-o", "none.toml", "--",
                           sys.executable, "check_env.py"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600, check=False, env={**__import__("os").environ, "PYTHONPATH": str(own)})
    assert "own ran" in proc.stdout and proc.returncode == 1 and "made no torch.nn.functional" in proc.stderr
    assert not (tmp_path / "none.toml").exists()

    proc = evoforge_cli("run", "--task", "captured.toml", "--generations", "1", "--json", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run"]
    proc = evoforge_cli("best", run_id, "--export", "kernel.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    module = load(tmp_path / "kernel.py")
    lost = [sp for sp in module.SPEC["shape_speedups"] if sp is not None and sp < 1.0]
    assert ("slower than PyTorch" in proc.stderr) == bool(lost)  # the export says where SDPA will run instead
    module.set_only_faster(False)  # run the kernel itself (on a CPU it loses to SDPA: Triton's interpreter)
    assert module.SPEC["causal"] and sorted(module.SPEC["verified_shapes"], key=lambda s: s["q_len"]) == [
        {"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 1, "kv_len": 51},
        {"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 48, "kv_len": 48}]
    q, k, v = qkv(s=48)
    module.reset_stats()
    close(module.attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
    assert module.stats()["kernel"] == 1


def test_capture_refuses_a_command_that_does_not_start(tmp_path: Path) -> None:
    proc = evoforge_cli("capture", "--", "no-such-program-evoforge", cwd=tmp_path)
    assert proc.returncode == 2 and "could not start 'no-such-program-evoforge'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failing_program_keeps_its_calls_and_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "fails.py").write_text(textwrap.dedent('''
        import torch, torch.nn.functional as F
        F.scaled_dot_product_attention(*(torch.randn(1, 2, 8, 32) for _ in range(3)))
        raise SystemExit(3)
    '''))
    proc = evoforge_cli("capture", "--", sys.executable, "fails.py", cwd=tmp_path)
    assert proc.returncode == 3 and "exited with code 3" in proc.stderr
    data = read_toml(tmp_path / "captured.toml")
    assert data["calls"] == 1 and data["class"][0]["dtype"] == "fp32"
