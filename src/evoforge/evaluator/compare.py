"""How the judge compares: an entry's outputs against the high-precision reference, and a reference
against itself (a nondeterministic Model can't be one). Pure functions on tensors; they run in the
judge only.

Large outputs are compared chunk by chunk (:data:`CHUNK` elements at a time, on the output's device where it
is a GPU, the reference's chunk moved there), so the comparison's temporaries (the difference, the bounds,
the masks) stay a few chunks in size however large the output is: a KernelBench problem's outputs can be
gigabytes, and a whole-tensor comparison made several copies of them beside the candidates' workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

CHUNK = 2**24  # elements of an output compared at once (64 MiB of float32 per temporary)


def compare(outs: list[Any], case: dict[str, Any], tolerance: Any) -> dict[str, Any]:
    """Compare outputs with the high-precision reference: shape, dtype, NaN/Inf, then atol/rtol."""
    ref, expect = case["ref"], case["expect"]

    def result(ok: bool, detail: str = "", max_abs: float | None = None, max_rel: float | None = None) -> dict:
        return {"case": case["name"], "ok": ok, "detail": detail, "max_abs_err": max_abs, "max_rel_err": max_rel}

    if len(outs) != len(ref):
        return result(False, f"returned {len(outs)} tensors, expected {len(ref)}")
    worst_abs = worst_rel = 0.0
    for i, (out, r) in enumerate(zip(outs, ref, strict=True)):
        if tuple(out.shape) != tuple(r.shape):
            return result(False, f"output {i} has shape {tuple(out.shape)}, expected {tuple(r.shape)}")
        if expect and out.dtype != expect[i][1]:
            return result(False, f"output {i} has dtype {out.dtype}, expected {expect[i][1]}")
        if not r.is_floating_point():
            if not all(bool(torch.equal(o.to(c.dtype), c)) for o, c in _chunks(out, r)):
                return result(False, f"output {i} differs (exact comparison for non-float outputs)")
            continue
        atol, rtol = tolerance(out.dtype)
        native = case.get("native_err", [])
        if i < len(native) and native[i] == native[i]:
            atol = max(atol, 2.0 * native[i])
        bad_values = n_bad = 0
        within = True
        out_abs = out_rel = 0.0
        for o, c in _chunks(out, r):
            bad_values += int((~torch.isfinite(o)).sum())
            if bad_values or not o.numel():
                continue
            diff = (o.to(c.dtype) - c).abs()
            allowed = atol + rtol * c.abs()
            out_abs = max(out_abs, float(diff.max()))
            out_rel = max(out_rel, float((diff / c.abs().clamp_min(max(atol, 1e-12))).max()))
            if not bool((diff <= allowed).all()):
                within = False
                n_bad += int((diff > allowed).sum())
        if bad_values:
            return result(False, f"output {i} has {bad_values} NaN/Inf values")
        worst_abs, worst_rel = max(worst_abs, out_abs), max(worst_rel, out_rel)
        if not within:
            return result(False, f"output {i}: {n_bad}/{out.numel()} values off, max abs error {worst_abs:.3g} "
                                 f"(atol {atol:g}, rtol {rtol:g})", worst_abs, worst_rel)
    return result(True, "", worst_abs, worst_rel)


def nondeterminism(first: list[Any], second: list[Any], like: list[Any], tolerance: Any) -> str | None:
    """How two reference runs on the same inputs differ beyond the task's tolerance (exactly for non-float
    outputs), or None when they agree."""
    if len(first) != len(second):
        return f"{len(first)} vs {len(second)} output tensors"
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape:
            return f"output {i} has shape {tuple(a.shape)} then {tuple(b.shape)}"
        if not a.is_floating_point():
            if not bool(torch.equal(a, b)):
                return f"output {i}: {int((a != b).sum())}/{a.numel()} values differ"
            continue
        atol, rtol = tolerance(like[i].dtype if i < len(like) else a.dtype)
        n_bad, worst_diff = 0, 0.0
        for x, y in _chunks(a, b):
            diff = (x - y).abs()
            # equal infinities and NaN in both runs agree; NaN in one run only is a difference
            bad = ~((diff <= atol + rtol * y.abs()) | (x == y) | (x.isnan() & y.isnan()))
            if bool(bad.any()):
                n_bad += int(bad.sum())
                worst_diff = max(worst_diff, float(diff[bad].nan_to_num(float("inf")).max()))
        if n_bad:
            return f"output {i}: {n_bad}/{a.numel()} values, max difference {worst_diff:.3g}"
    return None


def worst(checks: list[dict[str, Any]]) -> dict[str, float | None]:
    """Largest errors over the cases compared so far (None where no case got that far)."""
    out: dict[str, float | None] = {}
    for key in ("max_abs_err", "max_rel_err"):
        values = [c[key] for c in checks if c.get(key) is not None and c[key] == c[key]]
        out[key] = max(values) if values else None
    return out


def _chunks(out: Any, ref: Any) -> Iterator[tuple[Any, Any]]:
    """``out`` and ``ref`` flattened, :data:`CHUNK` elements at a time, both on one device: the output's
    where it is a GPU (a host reference moves there a chunk at a time), else the reference's."""
    device = out.device if out.device.type == "cuda" else ref.device
    flat_out, flat_ref = out.reshape(-1), ref.reshape(-1)
    for start in range(0, max(flat_out.numel(), 1), CHUNK):
        yield flat_out[start:start + CHUNK].to(device), flat_ref[start:start + CHUNK].to(device)
