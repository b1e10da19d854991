python3 -m pip install --no-deps --no-build-isolation -q -e . 2>&1 | tail -2
mkdir -p $OUT/r
date -u; git log --oneline -1
(cd experiments && timeout 70 python3 floor.py --genome '{"block_m":64,"block_n":128,"num_warps":4,"num_stages":3,"exp2":true,"k_layout":"direct","loop":"tl.range","causal_split":false,"split_kv":1,"prescale_q":false,"tma":false,"warp_spec":false,"fused_combine":false,"pack_gqa":false,"scale_fma":true,"exp_half":false,"pdl":false,"mask_diagonal":false,"persistent":0}' --out $OUT/r/floor-seed-h200.json 2>&1 | tail -12)
BL=sdpa_default,sdpa_flash,sdpa_cudnn,sdpa_mem_eff,flex_attention,compile_3kernel
rt() { date -u; echo "== $1 $2"; timeout 95 python3 -m evoforge.bench retime --task "$1" --kernel .gpuk/gluon0-$2.py --repeats 1 --baselines $BL --out $OUT/r/retime-gluon0-$3-h200.json 2>&1 | tail -6; }
rt "attention-d128:causal=true" d128c b2h16s4096d128-causal
rt "attention:batch=1,heads=16,seq_len=16384,head_dim=128,dtype=bf16" d128 b1h16s16384d128-bf16
rt "attention-long" d64 b4h32s2048d64
rt "attention-d128:dtype=bf16" d128 b2h16s4096d128-bf16
rt "attention-d128:causal=true,dtype=bf16" d128c b2h16s4096d128-causal-bf16
date -u
tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
