"""Where an eager latency's microseconds go on the seed shape: SDPA's default path timed four ways in one
process, from the launch-inclusive number evoforge's eager mode reports to triton's do_bench.

- ``evoforge_eager``: evoforge.timing's eager rep: L2 flushed, device synchronised, then CUDA events around
  one Python call (the GPU idle when the start event is recorded: the launch cost is inside).
- ``no_sync``: the same without the synchronisation before the start event.
- ``audit_hook``: evoforge_eager with the sandbox's audit hook installed (as in a worker).
- ``do_bench``: triton.testing.do_bench (flush, events, no synchronisation between reps: the launch
  overlaps the flush, so it is mostly hidden).
- ``worker_*``: the ``sdpa_default`` baseline through evoforge's evaluator (its own worker process): alone
  with the default sandbox, alone without a sandbox, and beside every other attention baseline (one worker
  each), eager and graph medians.

Writes JSON (device, versions, date, medians in us) to the path given, or prints it."""

from __future__ import annotations

import json
import statistics
import sys

import torch
import torch.nn.functional as F

from evoforge import envinfo, timing


def main() -> None:
    device = torch.device("cuda")
    q, k, v = (torch.randn(1, 8, 512, 64, device=device, dtype=torch.float16) for _ in range(3))

    def call() -> None:
        F.scaled_dot_product_attention(q, k, v)

    clock = timing.make_clock(device)
    for _ in range(50):
        call()
    rows: dict[str, float] = {}
    rows["evoforge_eager"] = statistics.median(clock.rep(call, "eager") for _ in range(500))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def no_sync() -> float:
        clock.flush_buffer.zero_()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1000

    rows["no_sync"] = statistics.median(no_sync() for _ in range(500))
    import triton.testing

    rows["do_bench"] = float(triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")) * 1000
    from evoforge.evaluator import guards

    guards.install_audit_guard()
    rows["audit_hook"] = statistics.median(clock.rep(call, "eager") for _ in range(500))
    from evoforge.evaluator import EvalConfig, Evaluator
    from evoforge.tasks import baselines_for, builtin_task

    spec = builtin_task("attention")
    every = baselines_for(spec)
    default = [b for b in every if b.name == "sdpa_default"]
    for label, entries, sandbox in (("worker_alone", default, "basic"), ("worker_alone_no_sandbox", default, "none"),
                                    ("worker_beside_all", every, "basic")):
        report = Evaluator(spec, EvalConfig(device="cuda", sandbox=sandbox)).evaluate([], entries)
        result = report.by_name()["sdpa_default"]
        for mode, stats in result.timing.items():
            rows[f"{label}_{mode}"] = stats.median_us
        rows[f"{label}_profile_s"] = {k: round(v, 2) for k, v in report.profile.items()}  # type: ignore[assignment]
    out = {"env": envinfo.collect(device), "shape": "B1 H8 S512 D64 fp16", "median_us": rows}
    text = json.dumps(out, indent=1)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
