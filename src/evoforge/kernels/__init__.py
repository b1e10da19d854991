"""Kernel templates and the genomes that fill them in: the template mutator's kernel families.

- :mod:`evoforge.kernels.flash_attention`: ``FlashGenome`` and ``render()`` for the Triton flash-attention
  kernel (``flash_attention.tmpl.py``), the family that runs everywhere Triton does (and on a CPU through
  Triton's interpreter).
- :mod:`evoforge.kernels.gluon_flash`: the Gluon (Triton's lower-level dialect) FA3-style family for sm_90,
  offered only where the GPU, Triton and Gluon can run it.
- :mod:`evoforge.kernels.holes`: the marked-hole template language both templates are written in, so each
  template is a readable, lintable kernel file rather than a Python format string.

A layer of mechanisms: these modules import nothing of evoforge above them; the template mutator
(:mod:`evoforge.mutators.template`) decides which genomes to try and the judge times what they render.
"""
