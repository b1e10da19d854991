"""How the judge compares: an entry's outputs against the high-precision reference, and a reference
against itself (a nondeterministic Model can't be one). Pure functions on tensors; they run in the
judge only."""

from __future__ import annotations

from typing import Any

import torch


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
        if out.device != r.device:
            out = out.to(r.device)
        if not r.is_floating_point():
            if not bool(torch.equal(out.to(r.dtype), r)):
                return result(False, f"output {i} differs (exact comparison for non-float outputs)")
            continue
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            return result(False, f"output {i} has {bad} NaN/Inf values")
        atol, rtol = tolerance(out.dtype)
        native = case.get("native_err", [])
        if i < len(native) and native[i] == native[i]:
            atol = max(atol, 2.0 * native[i])
        diff = (out.to(r.dtype) - r).abs()
        allowed = atol + rtol * r.abs()
        worst_abs = max(worst_abs, float(diff.max()) if diff.numel() else 0.0)
        worst_rel = max(worst_rel, float((diff / r.abs().clamp_min(max(atol, 1e-12))).max()) if diff.numel() else 0.0)
        if not bool((diff <= allowed).all()):
            n_bad = int((diff > allowed).sum())
            return result(False, f"output {i}: {n_bad}/{diff.numel()} values off, max abs error {worst_abs:.3g} "
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
        diff = (a - b).abs()
        # equal infinities and NaN in both runs agree; NaN in one run only is a difference
        bad = ~((diff <= atol + rtol * b.abs()) | (a == b) | (a.isnan() & b.isnan()))
        if bool(bad.any()):
            worst = float(diff[bad].nan_to_num(float("inf")).max())
            return f"output {i}: {int(bad.sum())}/{a.numel()} values, max difference {worst:.3g}"
    return None


def worst(checks: list[dict[str, Any]]) -> dict[str, float | None]:
    """Largest errors over the cases compared so far (None where no case got that far)."""
    out: dict[str, float | None] = {}
    for key in ("max_abs_err", "max_rel_err"):
        values = [c[key] for c in checks if c.get(key) is not None and c[key] == c[key]]
        out[key] = max(values) if values else None
    return out

