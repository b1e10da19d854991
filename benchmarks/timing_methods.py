"""Compare timing methods on the seed's attention shape, to check what evoforge.timing's numbers mean.

Runs on a CUDA GPU. For SDPA default and the seed's 3-kernel path it records:
- evoforge.timing eager and graph (the product's numbers);
- triton.testing.do_bench and do_bench_cudagraph (the field's reference tools);
- back-to-back calls timed with events (launch-bound throughput, what the seed measured);
- the host time of one call (launch cost alone);
- evoforge eager again after a torch.profiler session in the same process (CUPTI's after-effect).
The work is `evoforge bench timing` (evoforge.bench.calibrate); this script keeps its usage.
Usage: python benchmarks/timing_methods.py OUT.json
"""

from __future__ import annotations

import json
import sys

from evoforge.bench.calibrate import timing_methods


def main() -> None:
    text = json.dumps(timing_methods(), indent=2, default=str)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
