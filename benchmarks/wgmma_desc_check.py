"""Finds wgmma (HGMMA) descriptor registers that some path leaves stale, in an sm_90 cubin's SASS.

ptxas of CUDA 12.8 (Triton 3.6's wheel) compiled gluon_flash's loop without warp specialisation, a loop with
two inlined copies of the attention step under ``if i < full:``, so that the masked copy's wgmma read the K
and V descriptors of its later k-steps from uniform registers only the unmasked copy wrote: an
"out-of-range shared address" on an H200. The PTX was right, so only the SASS shows it. This runs a
reaching-definitions analysis over the SASS (``nvdisasm -c``) and reports every HGMMA descriptor register
reached by more than one kind of definition, or by none on some path.

    python3 benchmarks/wgmma_desc_check.py KERNEL.cubin
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def _blocks(sass: str) -> tuple[list[list[tuple[int, str]]], dict[str, int]]:
    blocks: list[list[tuple[int, str]]] = [[]]
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        if m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line):
            if blocks[-1] and re.search(r"\b(BRA|EXIT|RET)\b", blocks[-1][-1][1]):
                blocks.append([])
            blocks[-1].append((int(m.group(1), 16), m.group(2)))
        elif m := re.match(r"^(\.L_x_\d+):", line.strip()):
            blocks.append([])
            labels[m.group(1)] = len(blocks) - 1
    return blocks, labels


def _defs(text: str) -> set[str]:
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    op = text.split()[0]
    if op.startswith(("HGMMA", "SYNCS", "UTMA", "WARPGROUP", "BRA", "ST", "BAR")):
        return set()
    m = re.match(r"\S+\s+UR(\d+)\b", text)
    if not m:
        return set()
    return {f"UR{int(m.group(1)) + k}" for k in range(2 if ".64" in op else 1)}


def _uses(text: str) -> list[str]:
    r = int(re.search(r"gdesc\[UR(\d+)\]", text).group(1))
    # A from registers (HGMMA.<shape>.F32[.BF16] Rd, Ra, gdesc[...]): gdesc is B's, at r+2. The type suffix
    # after F32 (.BF16) once kept bf16 kernels out of this case, and their unused A slots read as stale.
    registers_a = re.search(r"HGMMA\S* R\d+, R\d+, gdesc", text)
    return [f"UR{r + k}" for k in ((2, 3) if registers_a else range(4))]


def stale_descriptors(sass: str) -> list[str]:
    """One line per HGMMA descriptor register whose reaching definitions differ (or include none)."""
    blocks, labels = _blocks(sass)
    n = len(blocks)
    succ: dict[int, list[int]] = {}
    for i, b in enumerate(blocks):
        last = b[-1][1] if b else ""
        out = []
        if m := re.search(r"BRA `\((\.L_x_\d+)\)", last):
            out.append(labels[m.group(1)])
        if ((not m and "EXIT" not in last) or last.startswith("@")) and i + 1 < n:
            out.append(i + 1)
        succ[i] = out
    preds: dict[int, list[int]] = {i: [] for i in range(n)}
    for i, ss in succ.items():
        for s in ss:
            preds[s].append(i)

    def through(i: int, state: dict[str, set[int]]) -> dict[str, set[int]]:
        state = {k: set(v) for k, v in state.items()}
        for addr, text in blocks[i]:
            for r in _defs(text):
                state[r] = {addr}
        return state

    entry = {f"UR{k}": {-1} for k in range(64)}  # -1: undefined at the kernel's entry
    state_in: dict[int, dict[str, set[int]]] = {i: {} for i in range(n)}
    changed = True
    while changed:
        changed = False
        for i in range(n):
            new = {k: set(v) for k, v in entry.items()} if i == 0 else {}
            for p in preds[i]:
                for r, v in through(p, state_in[p]).items():
                    new.setdefault(r, set()).update(v)
            if new != state_in[i]:
                state_in[i], changed = new, True
    text_at = {addr: re.sub(r"^@!?U?P\w+\s+", "", t) for b in blocks for addr, t in b}
    text_at[-1] = "(undefined)"
    found = []
    for i in range(n):
        state = {k: set(v) for k, v in state_in[i].items()}
        for addr, text in blocks[i]:
            if "HGMMA" in text:
                for r in _uses(text):
                    reaching = state.get(r, set())
                    if len({text_at[d] for d in reaching}) != 1:
                        found.append(f"{addr:#06x} {text}: {r} <- "
                                     + " | ".join(f"{d:#x} {text_at[d]}" for d in sorted(reaching)))
            for r in _defs(text):
                state[r] = {addr}
    return found


def disassemble(cubin: bytes) -> str | None:
    """The cubin's SASS by the Triton wheel's nvdisasm (None: no nvdisasm)."""
    import tempfile

    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    if not nvdisasm.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout


def check_cubin(cubin: bytes) -> list[str] | None:
    """stale_descriptors() of a cubin (None: no nvdisasm)."""
    sass = disassemble(cubin)
    return None if sass is None else stale_descriptors(sass)


def exp2_under_mma(sass: str) -> list[int]:
    """For each wgmma wait that leaves one group in flight (``WARPGROUP.DEPBAR.LE gsb0, 0x1``), the exponentials
    (``MUFU.EX2``) issued before the next wgmma wait: the softmax work that runs under the in-flight MMA. An
    overlapped schedule whose counts are 0 lost its overlap to ptxas's scheduling (or to serialisation)."""
    ops = [m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+([^;]*);", sass)]
    counts = []
    for i, op in enumerate(ops):
        if "WARPGROUP.DEPBAR.LE gsb0, 0x1" in op:
            n = 0
            for later in ops[i + 1:]:
                if "WARPGROUP.DEPBAR" in later:
                    break
                n += "MUFU.EX2" in later
            counts.append(n)
    return counts


if __name__ == "__main__":
    lines = check_cubin(Path(sys.argv[1]).read_bytes())
    print("\n".join(lines or []) or ("no nvdisasm" if lines is None else "no stale wgmma descriptors"))
    raise SystemExit(1 if lines else 0)
