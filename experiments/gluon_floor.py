"""Where the Gluon kernel's time goes on a long row: stripped copies of one genome's rendering (issue 20).

The issue asks, where a row stays short of its target, for the measured floor of that row and what the kernel
spends above it (``floor.py`` did this for the Triton seed kernel). This renders one Gluon genome for a shape and
times, as CUDA-graph replays beside SDPA, the kernel and three copies with parts cut out of the source text:

- ``no-softmax``: the online softmax's row max, exponentials and row sum replaced by P = S (the loads, both
  wgmmas per block, the P conversion and the epilogue stay);
- ``no-mma``: both wgmmas (and their waits) removed, S the key's index (the loads, the softmax but P's conversion
  to the wgmma operand, the epilogue stay);
- ``loads-only``: both cuts (the TMA stream through the ring, the barriers, the epilogue).

The stripped copies compute nonsense; only their times mean anything. The ``serial`` schedule's ``_attend`` is
the code cut, so the genome must use it: the default is generation 0's Gluon genome with the serial schedule
(generation 0's own is overlapped since e46f746; the floor of its 2026-12-01 record is the serial tile's).

    python experiments/gluon_floor.py --out benchmarks/results/gluon-floor-h200.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SOFTMAX = """    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
"""
NO_SOFTMAX = """    m_new = m_i
    p = s
    alpha = l_i * 0.0 + 1.0
    l_i = l_i + 1.0
"""
QK = """    s = warpgroup_mma(q_smem, k_buf.permute((1, 0)), s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
"""
# Without the Q·Kᵀ wgmma, S varies by key (a constant S would let the compiler fold the exponentials away).
NO_QK = """    keys = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    s = s + gl.expand_dims(keys.to(gl.float32), 0)
"""
PV = """    acc = warpgroup_mma(p_op, v_buf, acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
"""


def strip(source: str, cut: str) -> str:
    """``source`` with the parts named by ``cut`` removed (``no-softmax``, ``no-mma``, ``loads-only``)."""
    for part in (SOFTMAX, QK, PV):
        if source.count(part) != 1:
            raise ValueError(f"the template changed: expected one copy of {part.strip().splitlines()[0]!r}")
    if cut in ("no-softmax", "loads-only"):
        source = source.replace(SOFTMAX, NO_SOFTMAX)
    if cut in ("no-mma", "loads-only"):
        source = source.replace(QK, NO_QK).replace(PV, "")
    return source


def main() -> int:
    import gluon_bench as gb
    import torch

    from evoforge.kernels import gluon_flash as gf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--shapes", default="b2h16s4096d128,b2h16s4096d128-causal")
    ap.add_argument("--genome", default="",
                    help="the genome as JSON (default: generation 0's Gluon genome, serial schedule)")
    args = ap.parse_args()
    genome = (gf.GluonGenome.from_dict(json.loads(args.genome)) if args.genome
              else gf.DEFAULTS[0].with_(schedule="serial"))
    if genome.schedule != "serial":
        raise SystemExit("the cuts are written for the serial schedule")
    env = gb.environment()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.shapes.split(","):
            p = gb.SHAPES[label]
            q, k, v, _ = gb.inputs(p)
            sdpa = functools.partial(torch.nn.functional.scaled_dot_product_attention, is_causal=p.causal)
            base = gb.time_entry(sdpa, q, k, v)
            records.append({"shape": label, "entry": "sdpa", **base})
            source = gf.render(genome, causal=p.causal, head_dim=p.head_dim)
            for cut in ("kernel", "no-softmax", "no-mma", "loads-only"):
                text = source if cut == "kernel" else strip(source, cut)
                fn = gb.load(text, f"floor_{cut.replace('-', '_')}_{label.replace('-', '_')}", Path(tmp))
                t = gb.time_entry(fn, q, k, v)
                row = {"shape": label, "entry": cut, "genome": genome.to_dict(), **t,
                       "tflops_graph": p.flops / (t["graph_us"] * 1e-6) / 1e12}
                records.append(row)
                print(f"{label:24s} {cut:12s} {t['graph_us']:9.1f} us graph  {row['tflops_graph']:6.1f} TF/s"
                      f"  (SDPA {base['graph_us']:.1f} us)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"what": "Gluon kernel with parts cut out (experiments/gluon_floor.py)",
                                        "env": env, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
