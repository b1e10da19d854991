"""experiments/gluon_floor.py cuts what it says out of the Gluon kernel's current rendering (the text it edits is
the template's: a template change that moves it makes the script refuse, and this test fail)."""

from __future__ import annotations

import ast

import pytest

from evoforge.kernels import gluon_flash as gf
from tests.experiments import load_script


@pytest.mark.parametrize("causal", [False, True])
def test_each_cut_removes_its_part_and_nothing_else(causal: bool) -> None:
    floor = load_script("gluon_floor")
    source = gf.render(gf.DEFAULTS[0].with_(schedule="serial"), causal=causal, head_dim=128)
    kernel_mmas = source.count("warpgroup_mma(")
    for cut in ("no-softmax", "no-mma", "loads-only"):
        text = floor.strip(source, cut)
        ast.parse(text)
        assert ("gl.exp2(s * qk_scale" in text) == (cut == "no-mma"), cut
        # _attend's two wgmmas go; the overlapped schedule's (not this genome's) stay in the module
        assert text.count("warpgroup_mma(") == kernel_mmas - (2 if cut != "no-softmax" else 0), cut
        assert "tma.async_copy_global_to_shared" in text and "_epilogue(" in text
    with pytest.raises(ValueError, match="template changed"):
        floor.strip(source.replace(floor.QK, ""), "no-mma")
