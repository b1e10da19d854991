# usage: ROWS=... B=... R=... [BL=baselines] [T=seconds] bash .gpu_suite.sh
python3 -m pip install --no-deps --no-build-isolation -q -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
git log --oneline -1
mkdir -p $OUT/r
cp benchmarks/results/attention-suite-h200.json $OUT/r/ 2>/dev/null
date -u
timeout ${T:-560} python3 -m evoforge.bench suite --rows "$ROWS" --budget $B --repeats $R --out $OUT/r ${BL:+--baselines $BL} 2>&1 | tail -40
date -u
ls $OUT/r | head -50
tar czf $OUT/r.tgz -C $OUT r && rm -rf $OUT/r
