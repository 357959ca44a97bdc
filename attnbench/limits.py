"""Bounds on the numbers the commands take, defined once: past them a value is one line and exit
code 2 before any work, not a traceback, a hang or the OOM killer deep inside a run."""

# torch threads: far more makes torch's thread pool fail with MemoryError
MAX_THREADS = 1024
# seeds: what the seeded generators (torch, numpy, the tasks' own) were tested with; it also stays
# an int64 in exports, which a seed past 2**63 did not (pyarrow refused it)
MAX_SEED = 2**32 - 1
# tokens in one sequence (`bench run --lengths`) or one call (`bench perf` batch × n): q, k, v and x
# alone then take 128 GiB in fp32 at d_model 512; even the O(n) variants cannot go much further
MAX_TOKENS = 2**24
# tokens that `bench show-task` prints in an example and `bench attention` draws (an n × n figure)
MAX_SHOWN = 8192
