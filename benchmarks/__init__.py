"""Performance benchmarks: every variant's attention core and layer beside torch's SDPA, the naive
reference and peer implementations, each output verified against a reference before it is timed.

`python -m attnbench.benchmarks` and `bench perf` run it; results go to `results/benchmarks/`
(CSV, log–log PNG, markdown summary with the targets of issue 8).
"""

from attnbench.benchmarks.suite import PerfConfig, run_suite

__all__ = ["PerfConfig", "run_suite"]
