"""The built-in template/genome mutator: no network, no key.

Its space is the parameterised Triton flash-attention kernel (:mod:`evoforge.kernels.flash_attention`),
on an sm_90 GPU (compute capability 9.x, Triton 3.6 with Gluon importable) also the Gluon kernel family
(:mod:`evoforge.kernels.gluon_flash`, genomes of kind ``gluon_flash``), plus PyTorch's own attention paths
as genomes of their own. Mutation operators follow the seed's three levels (the Triton family's first):

- **algorithmic**: move between a PyTorch path and the fused online-softmax kernel; split the keys
  across programs (split-KV) for short or few-head problems, their partials combined by a second kernel
  or by the last program of each row block to finish (one launch); with grouped-query attention, pack
  the query heads of a K/V group into a program's rows so each K/V block is loaded once per group; the
  causal mask on every block, or the causal loop split into unmasked full blocks and masked diagonal
  blocks, or one loop that masks only the blocks crossing the diagonal;
- **implementation**: exp2 with the scale folded in or exp; the scale folded into Q once (rounded to
  Q's dtype: cheaper, slightly less exact, so the evaluator decides) or into the exponent's argument
  (the row maxima are scaled, each score costs one FMA); K loaded transposed through
  strides or loaded row-major and transposed in registers; a plain loop or ``tl.range`` software
  pipelining; on Hopper (sm_90+, Triton >= 3.4) only: K and V through device-side TMA tensor
  descriptors, exp2 in the inputs' half precision (two per instruction; the evaluator judges the
  precision), and programmatic dependent launch (the kernel is scheduled while the previous one drains
  and waits for its memory before touching any); from Blackwell on, warp specialisation of the pipelined
  loop;
- **hardware**: BLOCK_M, BLOCK_N, num_warps, num_stages, one step at a time; and persistent programs (one or
  more per SM, each walking the tiles column by column, causal row blocks heaviest first) or one program
  per tile, for kernels without split-KV;

plus uniform crossover of two kernel genomes of one family. Genomes that don't fit the GPU (shared memory,
registers) are never proposed.

The Gluon family (where offered) has its own genes, mutated within the family: **algorithmic**, a TMA
producer warp (``gl.warp_specialize``) or not, one or two consumer partitions, the causal mask on the
diagonal blocks only or on every block, and a switch of family (to the Triton kernel's generation-0 genome
and back: ``family`` is a gene in effect); **implementation**, the epilogue by TMA store or from registers,
the producer's and the second consumer's register budgets; **hardware**, BLOCK_M, BLOCK_N, the K/V ring's
stages and warps per consumer. Generation 0 is the same for every shape (the search, not a table of winners per
kind of shape, picks a shape's kernel): PyTorch's math path, four Triton starters (``starter_genomes``) and the
first of ``gluon_flash.DEFAULTS``, each where it fits the GPU; parents are drawn family first.
"""

from __future__ import annotations

import random
from dataclasses import fields
from typing import Any

from evoforge.candidate import Candidate
from evoforge.kernels import gluon_flash as gf
from evoforge.kernels.flash_attention import (
    BLOCKS,
    BLOCKS_N,
    K_LAYOUTS,
    LOOPS,
    PERSISTENT,
    SPLITS,
    STAGES,
    WARPS,
    FlashGenome,
    HardwareLimits,
    fits,
    render,
    splits_to_fill,
)
from evoforge.mutators.base import GenomeMutator
from evoforge.results import Individual
from evoforge.tasks.attention import AttentionParams, variants

LEVEL_WEIGHTS = {"algorithmic": 0.2, "implementation": 0.3, "hardware": 0.5}
CAUSAL_MASKS = {"every": "every block", "split": "split loop", "diagonal": "diagonal blocks only"}


def _step(values: tuple[Any, ...], current: Any, rng: random.Random) -> Any:
    i = values.index(current) if current in values else 0
    options = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return rng.choice(options)


class TemplateMutator(GenomeMutator):
    name = "template"

    def __init__(self, rng: random.Random, params: AttentionParams, limits: HardwareLimits) -> None:
        super().__init__(rng)
        self.params = params
        self.limits = limits
        self.elem_bytes = 4 if params.torch_dtype == "float32" else 2
        # Every sweep variant, the seed's semantic changes (bf16 compute, TF32) included: those are
        # judged against the same high-precision reference and keep their labels.
        self.torch_paths = {v.name: v for v in variants(params)}
        # The Gluon family: only on sm_90 with Gluon importable, and where one of its defaults fits the task.
        self.gluon_default = self._gluon_default() if gf.offered(limits) else None
        self.gluon = self.gluon_default is not None

    @staticmethod
    def takes(params: Any) -> bool:
        """Whether a task kind's parameters are the ones this mutator's genomes are rendered for (attention's)."""
        return isinstance(params, AttentionParams)

    # ---------------------------------------------------------------- genomes -> candidates
    def starter_genomes(self) -> list[FlashGenome]:
        """Generation 0's Triton kernels: one fixed set for every shape (issue 20: the search, not a table of
        measured winners per kind of shape, picks the kernel for a shape), each of those that fits the GPU:
        a 64x128 tile, a 128x128 tile of 8 warps, a 64x64 tile, and a 16-row tile with the keys split over
        programs until the tiles fill the SMs (``splits_to_fill``, each split at least four 128-key blocks long;
        the rule FlashAttention's split heuristic follows, no measurement) and, with grouped-query attention, a
        K/V group's query heads packed into a program's rows. A causal task masks only the blocks crossing the
        diagonal in each. Each runs the most pipeline stages (of 3) that the GPU's shared memory holds; where none
        fits at all (a small GPU), the first smaller fallback that does."""
        if self.limits.interpreter:  # Triton's interpreter on a CPU: one small kernel keeps generation 0 quick
            return [FlashGenome(block_m=32, block_n=32, num_warps=4, num_stages=1)]
        p = self.params
        group = p.heads // p.n_kv_heads
        common = dict(num_stages=3, loop="tl.range", scale_fma=True, mask_diagonal=p.causal)
        split = splits_to_fill(self._tiles(16, group > 1), self.limits.sm_count)
        while split > 1 and p.seq_len < split * 4 * 128:
            split //= 2
        starters = [FlashGenome(block_m=64, block_n=128, **common),
                    FlashGenome(block_m=128, block_n=128, num_warps=8, k_layout="trans", **common),
                    FlashGenome(block_m=64, block_n=64, k_layout="trans", **common),
                    FlashGenome(block_m=16, block_n=128, k_layout="trans", pack_gqa=group > 1, split_kv=split,
                                fused_combine=split > 1, **common)]
        # each at the most pipeline stages (3, else 2, else 1) that the GPU's shared memory holds
        fitting = [next((g.with_(num_stages=n) for n in (3, 2, 1) if self._fits(g.with_(num_stages=n))), None)
                   for g in starters]
        if any(fitting):
            return list(dict.fromkeys(g for g in fitting if g is not None))
        for g in (FlashGenome(), FlashGenome(block_m=32, block_n=32, num_stages=1)):
            if self._fits(g):
                return [g]
        return [FlashGenome(block_m=16, block_n=16, num_warps=1, num_stages=1)]

    def _tiles(self, block_m: int, pack_gqa: bool) -> int:
        """Programs of a launch without split-KV: row blocks of ``block_m`` rows per head (per K/V group, packed)."""
        p = self.params
        group = p.heads // p.n_kv_heads
        if pack_gqa and group > 1:
            return p.batch * p.n_kv_heads * -(-p.n_q * group // block_m)
        return p.batch * p.heads * -(-p.n_q // block_m)

    def _fills_the_gpu(self, g: FlashGenome) -> bool:
        """Whether ``g``'s tiles alone make a full wave on the GPU's SMs (known SM count only): more key splits
        then only add partials to combine (on the H200's B4 H32 S2048 D64 row the two split-KV mutants, of a 64x64
        and a 128x128 tile, ran at 0.82x and 0.80x of their parents' speed), so the search is not offered them there."""
        return 0 < self.limits.sm_count <= self._tiles(g.block_m, g.pack_gqa)

    def default_genome(self) -> FlashGenome:
        """The first of generation 0's Triton kernels (``starter_genomes``): the same for every shape that it fits."""
        return self.starter_genomes()[0]

    def _gluon_default(self) -> gf.GluonGenome | None:
        """Generation 0's Gluon kernel: the first of ``gluon_flash.DEFAULTS`` that fits (not tuned per shape)."""
        return next((g for g in gf.DEFAULTS if self._fits_gluon(g)), None)

    def _fits_gluon(self, g: gf.GluonGenome) -> bool:
        return gf.fits(g, self.params.head_dim, self.elem_bytes, self.limits) is None

    def _admit(self, genome: dict[str, Any]) -> bool:
        if genome["kind"] == gf.KIND:
            return self.gluon and self._fits_gluon(gf.GluonGenome.from_dict(genome))
        return genome["kind"] != "triton_flash" or self._fits(FlashGenome.from_dict(genome))

    def build(self, genome: dict[str, Any], lineage: dict[str, Any]) -> Candidate:
        if genome["kind"] == gf.KIND:
            gg = gf.GluonGenome.from_dict(genome)
            source = gf.render(gg, causal=self.params.causal, head_dim=self.params.head_dim)
            return Candidate(name=f"gluon-{gg.key()[:6]}", source=source, language="triton",
                             genome=gg.to_dict(), lineage={**lineage, "mutator": self.name})
        if genome["kind"] == "torch":
            base = self.torch_paths[genome["variant"]]
            return Candidate(name=f"torch-{genome['variant']}", source=base.source, language="torch",
                             labels=list(base.labels), genome=genome, lineage={**lineage, "mutator": self.name})
        g = FlashGenome.from_dict(genome)
        source = render(g, causal=self.params.causal, head_dim=self.params.head_dim)
        return Candidate(name=f"flash-{g.key()[:6]}", source=source, language="triton",
                         genome=g.to_dict(), lineage={**lineage, "mutator": self.name})

    def seed(self) -> list[Candidate]:
        """Generation 0: PyTorch's math path, the first Triton starter, the Gluon kernel (where offered), then the
        other Triton starters (a small population keeps the first ones: one of each family)."""
        first, *others = self.starter_genomes()
        genomes = [{"kind": "torch", "variant": "math_baseline"}, first.to_dict(),
                   *([self.gluon_default.to_dict()] if self.gluon_default is not None else []),
                   *(g.to_dict() for g in others)]
        return [self.build(g, {"mutation": "seed", "level": "seed"}) for g in genomes]

    # ---------------------------------------------------------------- operators
    def _fits(self, g: FlashGenome) -> bool:
        return fits(g, self.params.head_dim, self.elem_bytes, self.limits) is None

    def mutate(self, genome: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        """One mutation of ``genome``: (new genome, description, level)."""
        rng = self.rng
        if genome["kind"] == gf.KIND:
            return self._mutate_gluon(gf.GluonGenome.from_dict(genome))
        if genome["kind"] == "torch":
            if rng.random() < 0.6:
                if self.gluon_default is not None and rng.random() < 0.5:
                    return self.gluon_default.to_dict(), "fuse into the Gluon (sm_90) kernel", "algorithmic"
                return rng.choice(self.starter_genomes()).to_dict(), "fuse into the online-softmax Triton kernel", \
                    "algorithmic"
            other = rng.choice([n for n in self.torch_paths if n != genome["variant"]] or [genome["variant"]])
            return {"kind": "torch", "variant": other}, f"switch PyTorch path to {other}", "algorithmic"
        g = FlashGenome.from_dict(genome)
        level = rng.choices(list(LEVEL_WEIGHTS), weights=list(LEVEL_WEIGHTS.values()))[0]
        if level == "algorithmic":
            gqa = self.params.n_kv_heads < self.params.heads
            options = ["split_kv", "fused_combine", "pack_gqa", "causal_mask", "torch"]
            full = self._fills_the_gpu(g)
            weights = [0.0 if full and g.split_kv == 1 else 0.5, 0.3 if g.split_kv > 1 else 0.0,
                       0.35 if gqa else 0.0, 0.35 if self.params.causal else 0.0, 0.15]
            if self.gluon_default is not None:
                options.append("family")
                weights.append(0.2)
            what = rng.choices(options, weights=weights)[0]
            if what == "family" and self.gluon_default is not None:
                return self.gluon_default.to_dict(), "switch family: Triton -> Gluon (sm_90)", level
            if what == "pack_gqa":
                return g.with_(pack_gqa=not g.pack_gqa).to_dict(), \
                    f"{'one query head' if g.pack_gqa else 'a K/V group'} per program's rows", level
            if what == "split_kv":  # where the tiles fill the GPU already, only fewer splits
                new = SPLITS[SPLITS.index(g.split_kv) - 1] if full and g.split_kv in SPLITS[1:] else \
                    _step(SPLITS, g.split_kv, rng)
                # Persistent programs walk whole row blocks: split-KV leaves them behind.
                return g.with_(split_kv=new, fused_combine=g.fused_combine and new > 1,
                               persistent=g.persistent if new == 1 else 0).to_dict(), \
                    f"split-KV {g.split_kv} -> {new}", level
            if what == "fused_combine":
                return g.with_(fused_combine=not g.fused_combine).to_dict(), \
                    f"split-KV combine {'in a second kernel' if g.fused_combine else 'by the last program'}", level
            if what == "causal_mask":
                # Three ways to mask: every block, the loop split in two (unmasked full blocks, then the
                # masked diagonal ones), one loop that masks only the blocks crossing the diagonal.
                now = "split" if g.causal_split else "diagonal" if g.mask_diagonal else "every"
                new = rng.choice([m for m in CAUSAL_MASKS if m != now])
                return g.with_(causal_split=new == "split", mask_diagonal=new == "diagonal").to_dict(), \
                    f"causal mask: {CAUSAL_MASKS[now]} -> {CAUSAL_MASKS[new]}", level
            variant = rng.choice(sorted(self.torch_paths))
            return {"kind": "torch", "variant": variant}, f"replace the kernel with {variant}", level
        if level == "implementation":
            what = rng.choice(["exp2", "k_layout", "loop", "prescale_q", "scale_fma"]
                              + (["tma", "pdl"] if self.limits.hopper else [])
                              + (["exp_half"] if self._fits(g.with_(exp2=True, exp_half=True)) else [])
                              + (["warp_spec"] if self.limits.warp_spec else []))
            if what == "tma":
                return g.with_(tma=not g.tma).to_dict(), f"TMA descriptors {'off' if g.tma else 'on'}", level
            if what == "pdl":
                return g.with_(pdl=not g.pdl).to_dict(), \
                    f"programmatic dependent launch {'off' if g.pdl else 'on'}", level
            if what == "warp_spec":
                # Warp specialisation lives on the tl.range loop: switching it on brings the loop along.
                return g.with_(warp_spec=not g.warp_spec, loop="tl.range").to_dict(), \
                    f"warp specialisation {'off' if g.warp_spec else 'on'}", level
            if what == "exp2":
                return g.with_(exp2=not g.exp2, exp_half=False).to_dict(), f"exp2 {'off' if g.exp2 else 'on'}", level
            if what == "exp_half":
                return g.with_(exp_half=not g.exp_half, exp2=True).to_dict(), \
                    f"exp2 in {'fp32' if g.exp_half else 'half precision'}", level
            if what == "prescale_q":
                return g.with_(prescale_q=not g.prescale_q, scale_fma=False).to_dict(), \
                    f"scale folded into Q {'off' if g.prescale_q else 'on'}", level
            if what == "scale_fma":
                return g.with_(scale_fma=not g.scale_fma, prescale_q=False).to_dict(), \
                    f"scale folded into exp's argument (FMA) {'off' if g.scale_fma else 'on'}", level
            if what == "k_layout":
                new = _step(K_LAYOUTS, g.k_layout, rng)
                return g.with_(k_layout=new).to_dict(), f"K load {g.k_layout} -> {new}", level
            new = _step(LOOPS, g.loop, rng)
            return g.with_(loop=new).to_dict(), f"loop {g.loop} -> {new}", level
        what = rng.choice(["block_m", "block_n", "num_warps", "num_stages"]
                          + (["persistent"] if g.split_kv == 1 else []))
        space = {"block_m": BLOCKS, "block_n": BLOCKS_N, "num_warps": WARPS, "num_stages": STAGES,
                 "persistent": PERSISTENT}[what]
        old = getattr(g, what)
        new = _step(space, old, rng)
        return g.with_(**{what: new}).to_dict(), f"{what} {old} -> {new}", level

    def _mutate_gluon(self, g: gf.GluonGenome) -> tuple[dict[str, Any], str, str]:
        """One mutation of a Gluon genome, within its family (or a switch to the Triton family's default)."""
        rng = self.rng
        level = rng.choices(list(LEVEL_WEIGHTS), weights=list(LEVEL_WEIGHTS.values()))[0]
        if level == "algorithmic":
            what = rng.choices(["warp_spec", "consumers", "schedule", "causal_split", "family", "torch"],
                               weights=[0.3, 0.4, 0.5, 0.35 if self.params.causal else 0.0, 0.15, 0.1])[0]
            if what == "warp_spec":
                off = g.with_(warp_spec=False, consumers=1, schedule="serial")
                return (off if g.warp_spec else g.with_(warp_spec=True)).to_dict(), \
                    f"TMA producer warp (warp specialisation) {'off' if g.warp_spec else 'on'}", level
            if what == "consumers":
                new = 2 if g.consumers == 1 else 1
                schedule = "overlap" if g.schedule == "pingpong" else g.schedule  # ping-pong takes two
                return g.with_(consumers=new, warp_spec=True, schedule=schedule).to_dict(), \
                    f"consumer partitions {g.consumers} -> {new}", level
            if what == "schedule":
                offered = [x for x in gf.SCHEDULES if x != "pingpong" or gf.PINGPONG_OFFERED]
                new_schedule = rng.choice([x for x in offered if x != g.schedule] or offered)
                changes: dict[str, Any] = {"schedule": new_schedule, "warp_spec": True}
                if new_schedule == "pingpong" and g.consumers == 1:  # two consumers of one warpgroup each
                    changes.update(consumers=2, consumer_warps=4, block_m=max(64, g.block_m // 2))
                return g.with_(**changes).to_dict(), f"MMA schedule {g.schedule} -> {new_schedule}", level
            if what == "causal_split":
                now, then = ("diagonal blocks only", "every block")[::1 if g.causal_split else -1]
                return g.with_(causal_split=not g.causal_split).to_dict(), f"causal mask: {now} -> {then}", level
            if what == "family":
                return rng.choice(self.starter_genomes()).to_dict(), "switch family: Gluon -> Triton", level
            variant = rng.choice(sorted(self.torch_paths))
            return {"kind": "torch", "variant": variant}, f"replace the kernel with {variant}", level
        if level == "implementation":
            what = rng.choice(["tma_store", "producer_regs", "realloc_regs"]
                              + (["flat_workers"] if g.warp_spec else [])
                              + (["persistent"] if g.warp_spec and gf.PERSISTENT_OFFERED else [])
                              + (["consumer_regs"] if g.consumers > 1 else []))
            if what == "tma_store":
                return g.with_(tma_store=not g.tma_store).to_dict(), \
                    f"epilogue {'from registers' if g.tma_store else 'by TMA store'}", level
            if what == "persistent":
                return g.with_(persistent=not g.persistent).to_dict(), \
                    ("a program per tile" if g.persistent else "one program per SM looping over tiles"), level
            if what == "flat_workers":
                return g.with_(flat_workers=not g.flat_workers).to_dict(), \
                    ("worker warps " + ("loop back to Gluon's dispatch" if g.flat_workers
                                        else "leave after their partition")), level
            if what == "realloc_regs":
                return g.with_(realloc_regs=not g.realloc_regs).to_dict(), \
                    ("every warp keeps the launch's registers" if g.realloc_regs
                     else "partitions trade registers (setmaxnreg)"), level
            space = gf.PRODUCER_REGS if what == "producer_regs" else gf.CONSUMER_REGS
            old = getattr(g, what)
            new = _step(space, old, rng)
            return g.with_(**{what: new}).to_dict(), f"{what} {old} -> {new}", level
        what = rng.choice(["block_m", "block_n", "num_stages", "consumer_warps"])
        space = {"block_m": gf.BLOCKS_M, "block_n": gf.BLOCKS_N, "num_stages": gf.STAGES,
                 "consumer_warps": gf.CONSUMER_WARPS}[what]
        old = getattr(g, what)
        new = _step(space, old, rng)
        return g.with_(**{what: new}).to_dict(), f"{what} {old} -> {new}", level

    def crossover(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        if a.get("kind") != b.get("kind"):
            return dict(a)  # families don't cross: the parent itself, which the proposal loop drops as seen
        if a.get("kind") == gf.KIND:
            pa, pb = gf.GluonGenome.from_dict(a), gf.GluonGenome.from_dict(b)
            genes = {f.name: getattr(pa if self.rng.random() < 0.5 else pb, f.name) for f in fields(gf.GluonGenome)}
            return gf.GluonGenome(**genes).to_dict()
        ga, gb = FlashGenome.from_dict(a), FlashGenome.from_dict(b)
        picked = {f.name: getattr(ga if self.rng.random() < 0.5 else gb, f.name) for f in fields(FlashGenome)}
        return FlashGenome(**picked).to_dict()

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        pool = parents or history
        if not pool:
            return self.seed()[:n]
        kernels = [p for p in parents
                   if p.candidate.genome and p.candidate.genome.get("kind") in ("triton_flash", gf.KIND)]
        return self.breed(n, {ind.candidate.hash for ind in history}, kernels, pool,
                          lambda p: p.candidate.genome or {"kind": "torch", "variant": "math_baseline"},
                          self._admit, self._pick)

    def _pick(self, parents: list[Individual]) -> Individual:
        """A parent to mutate: PyTorch paths at their share of the parents; the kernels' share split evenly
        between the kernel families present (generation 0's four Triton starters don't crowd out its one
        Gluon kernel: each family gets as many mutations as the other)."""
        chosen = self.rng.choice(parents)
        kind = (chosen.candidate.genome or {}).get("kind")
        if kind not in ("triton_flash", gf.KIND):
            return chosen
        by_family: dict[str, list[Individual]] = {}
        for p in parents:
            family = (p.candidate.genome or {}).get("kind")
            if family in ("triton_flash", gf.KIND):
                by_family.setdefault(family, []).append(p)
        return self.rng.choice(by_family[self.rng.choice(sorted(by_family))])
