#!/usr/bin/env bash
# The attention sweep on this machine's GPU: 3 repeats, evidence recorded under benchmarks/results/.
# Usage: bash benchmarks/sweep.sh [extra `evoforge sweep` options, e.g. --task attention-causal]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -m evoforge.cli doctor
slug=$(python3 -c "import torch; from evoforge.envinfo import device_slug; print(device_slug(torch.cuda.get_device_name(0)))")
name="sweep-${slug}"
for arg in "$@"; do case "$arg" in attention*) name="sweep-${slug}-${arg%%:*}";; esac; done
# exit 1 is the sweep's verdict ("no variant beat every other PyTorch path"), recorded, not an error
python3 -m evoforge.cli sweep --repeats 3 --out "benchmarks/results/${name}.json" "$@" || [ $? -eq 1 ]
