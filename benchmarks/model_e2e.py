"""Proof on a real model (issue 21): a transformers decoder built from a config (random weights, nothing
downloaded), its attention calls captured, kernels evolved for them, then prefill and decode run with SDPA and with
the evolved kernels (attn_implementation="evoforge"), compared.

Stages (``--stage``, default ``all``; each writes into ``--dir``):
- ``capture``: the workload (each ``--prefill BxT`` prompt, then ``--decode-steps`` greedy steps) under
  ``evoforge.capture`` with attn_implementation="sdpa" -> ``captured.toml``;
- ``evolve``: ``evoforge run --task captured.toml[:N] --budget B`` for each shape class, then
  ``evoforge best RUN... --export kernel.py`` -> ``kernel.py`` (a dispatch table where there are several classes);
- ``compare``: the same weights twice, "sdpa" and "evoforge" (``--kernel``, default the exported one): per
  prefill shape, the logits of the prompt and of each decode step (the same tokens fed to both) compared within
  the dtype's tolerance; prompt tokens per second and decode tokens per second (median of ``--reps`` timed
  repeats, each synchronised); the calls each kernel ran and the calls that fell back (and why) ->
  ``model-e2e.json`` (or ``--out``).

Usage (GPU): python benchmarks/model_e2e.py --preset llama --dir e2e --budget 8m \\
                 --out benchmarks/results/model-e2e-llama-h200.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import evoforge
from evoforge import envinfo
from evoforge import workload as workload_file
from evoforge.export import load

# Decoder shapes with grouped-query attention (head_dim 128, bf16 by default): a Llama-style and a Qwen2-style
# model of 4 layers, and a tiny one for a CPU check.
PRESETS: dict[str, dict[str, Any]] = {
    "llama": {"family": "llama", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4,
              "head_dim": 128, "intermediate_size": 5632, "num_hidden_layers": 4, "vocab_size": 32000},
    "qwen2": {"family": "qwen2", "hidden_size": 1536, "num_attention_heads": 12, "num_key_value_heads": 2,
              "head_dim": 128, "intermediate_size": 8960, "num_hidden_layers": 4, "vocab_size": 32000},
    "tiny": {"family": "llama", "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
             "head_dim": 32, "intermediate_size": 64, "num_hidden_layers": 2, "vocab_size": 64},
}
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float32: 1e-4}  # on logits, relative to their scale


def build(preset: str, attn: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> Any:
    import transformers

    cfg = dict(PRESETS[preset])
    family = cfg.pop("family")
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family]
    config = config_cls(**cfg, max_position_embeddings=16384)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    return model.to(device).eval()


def parse_prefill(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        batch, _, tokens = part.partition("x")
        try:
            shapes.append((int(batch), int(tokens)))
        except ValueError:
            raise SystemExit(f"model_e2e: --prefill takes BATCHxTOKENS,..., got {part!r}") from None
    return shapes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def workload(model: Any, batch: int, tokens: int, steps: int, vocab: int, device: torch.device,
             feed: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], float, float]:
    """A prompt of ``tokens`` for ``batch`` sequences, then ``steps`` greedy decode steps (``feed``: the tokens to
    decode with, so that two models see the same inputs). Returns the logits of the prompt's last position and of
    each step, the tokens fed, and the prefill and decode seconds (each synchronised)."""
    gen = torch.Generator().manual_seed(batch * 100003 + tokens)
    ids = torch.randint(0, vocab, (batch, tokens), generator=gen).to(device)
    sync(device)
    start = time.perf_counter()
    out = model(ids, use_cache=True)
    sync(device)
    prefill_s = time.perf_counter() - start
    logits, fed = [out.logits[:, -1].float()], []
    cache = out.past_key_values
    start = time.perf_counter()
    for step in range(steps):
        token = feed[step] if feed is not None else logits[-1].argmax(-1, keepdim=True)
        fed.append(token)
        out = model(token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits.append(out.logits[:, -1].float())
    sync(device)
    return logits, fed, prefill_s, time.perf_counter() - start


def capture(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Path:
    model = build(args.preset, "sdpa", dtype, device)
    path = args.dir / "captured.toml"
    with evoforge.capture(path) as recorder:
        for batch, tokens in parse_prefill(args.prefill):
            workload(model, batch, tokens, args.decode_steps, PRESETS[args.preset]["vocab_size"], device)
    calls = sum(r["calls"] for r in recorder.records())
    print(f"model_e2e: captured {calls} attention calls -> {path}", file=sys.stderr)
    return path


def evolve(args: argparse.Namespace, captured: Path) -> Path:
    classes = workload_file.read_toml(captured).get("class") or []
    if not classes:
        raise SystemExit(f"model_e2e: {captured} has no shape class an evolved kernel can take")
    runs = []
    for n in range(1, len(classes) + 1):
        task = f"{captured}:{n}" if len(classes) > 1 else str(captured)
        cmd = [sys.executable, "-m", "evoforge.cli", "run", "--task", task, "--budget", args.budget, "--json",
               *args.run_args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"model_e2e: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        runs.append(json.loads(proc.stdout)["run"])
    kernel = args.dir / "kernel.py"
    proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "best", *runs, "--export", str(kernel)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"model_e2e: export failed: {proc.stderr.strip()}")
    (args.dir / "runs.json").write_text(json.dumps(runs) + "\n")
    return kernel


def compare(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, kernel_path: Path) -> dict[str, Any]:
    kernel = load(kernel_path)
    if not kernel.register_transformers():
        raise SystemExit("model_e2e: transformers is not importable")
    ours, theirs = build(args.preset, "evoforge", dtype, device), build(args.preset, "sdpa", dtype, device)
    ours.load_state_dict(theirs.state_dict())
    vocab, rows = PRESETS[args.preset]["vocab_size"], []
    for batch, tokens in parse_prefill(args.prefill):
        base, fed, _, _ = workload(theirs, batch, tokens, args.decode_steps, vocab, device)
        kernel.reset_stats()
        got, _, _, _ = workload(ours, batch, tokens, args.decode_steps, vocab, device, feed=fed)
        calls = kernel.stats()
        errors = [((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(got, base, strict=True)]
        times: dict[str, list[float]] = {"sdpa_prefill": [], "sdpa_decode": [], "evoforge_prefill": [],
                                         "evoforge_decode": []}
        for _ in range(args.reps):  # interleaved, so drift hits both alike
            for name, model in (("sdpa", theirs), ("evoforge", ours)):
                _, _, prefill_s, decode_s = workload(model, batch, tokens, args.decode_steps, vocab, device, feed=fed)
                times[f"{name}_prefill"].append(prefill_s)
                times[f"{name}_decode"].append(decode_s)
        median = {key: statistics.median(v) for key, v in times.items()}
        share = calls["kernel"] / max(1, calls["kernel"] + calls["fallback"])
        rows.append({
            "batch": batch, "prompt_tokens": tokens, "decode_steps": args.decode_steps,
            "max_rel_logit_error": max(errors), "identical_within_tolerance": max(errors) <= TOLERANCE[dtype],
            "prefill_tokens_per_s": {"sdpa": batch * tokens / median["sdpa_prefill"],
                                     "evoforge": batch * tokens / median["evoforge_prefill"]},
            "decode_tokens_per_s": ({"sdpa": batch * args.decode_steps / median["sdpa_decode"],
                                     "evoforge": batch * args.decode_steps / median["evoforge_decode"]}
                                    if args.decode_steps else None),
            "seconds": median, "attention_calls": calls, "kernel_share": share,
        })
        print(f"model_e2e: {batch}x{tokens}: max rel logit error {max(errors):.2e}, kernel share {share:.0%}, "
              f"prefill {median['sdpa_prefill'] * 1e3:.2f} -> {median['evoforge_prefill'] * 1e3:.2f} ms, decode "
              f"{median['sdpa_decode'] * 1e3:.2f} -> {median['evoforge_decode'] * 1e3:.2f} ms", file=sys.stderr)
    return {
        "what": "benchmarks/model_e2e.py: a transformers decoder with SDPA and with evoforge's kernels",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": envinfo.collect(device), "preset": {args.preset: PRESETS[args.preset]},
        "dtype": str(dtype).removeprefix("torch."), "reps": args.reps, "tolerance": TOLERANCE[dtype],
        "kernel": str(kernel_path), "table": [{k: s[k] for k in ("name", "run", "candidate", "speedup", "baseline",
                                                                 "verified_shapes")} for s in kernel.TABLE],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", "capture", "evolve", "compare"), default="all")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--prefill", default="1x512,4x2048,8x1024,1x8192", help="BATCHxTOKENS,...")
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", default="8m", help="evoforge run --budget, per shape class")
    parser.add_argument("--run-args", nargs=argparse.REMAINDER, default=[], help="more evoforge run flags (last)")
    parser.add_argument("--kernel", type=Path, help="compare: this export (default DIR/kernel.py)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dir", type=Path, default=Path("model-e2e"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("model_e2e: no CUDA device here (--device cpu --preset tiny checks the script)", file=sys.stderr)
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    args.dir.mkdir(parents=True, exist_ok=True)
    captured = args.dir / "captured.toml"
    if args.stage in ("all", "capture"):
        captured = capture(args, device, dtype)
    kernel = args.kernel or args.dir / "kernel.py"
    if args.stage in ("all", "evolve"):
        kernel = evolve(args, captured)
    if args.stage in ("all", "compare"):
        record = compare(args, device, dtype, kernel)
        text = json.dumps(record, indent=2)
        (args.out or args.dir / "model-e2e.json").write_text(text + "\n")
        if not all(r["identical_within_tolerance"] for r in record["rows"]):
            print("model_e2e: logits differ beyond the tolerance", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
