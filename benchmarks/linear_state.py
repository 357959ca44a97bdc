"""Where non-causal `linear`'s time goes on a GPU, and whether splitting its key state's sum helps.

On an H200 (f8fe909) compiled `linear` took 0.11 / 0.23 / 0.88 ms at n = 2048 / 4096 / 16384
(b = 1, h = 8, d = 64), about 2 TFLOP/s, replayed from a CUDA graph: GPU time, not launches. The
suspect is the key state Σ φ(k_j) v_jᵀ: one (d × n)(n × e) product per (batch, head), eight
small outputs over a long reduction, little parallel work. `split_k_linear` sums it in `splits`
parts of n / splits positions, one batched product over (b·h·splits) and a sum over the splits.

    python -m attnbench.benchmarks.linear_state [--lengths 4096,16384] [--splits 8,32] [--device cuda]

For each length it checks every candidate against the naive reference (`variants/reference.py`;
past n = 4096, against the eager library path) and times it (`runner.measure.time_call`) beside SDPA, eager and compiled, in inference mode; then
it lists the ten kernels that took the most device time in the compiled core's call (torch's
profiler, without graph replay). It prints, and writes nothing: `benchmarks/cuda_session.sh`'s
`linear-state` step keeps its lines in log.txt. `--device cpu` rehearses it.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from einops import rearrange

from attnbench.runner.measure import relative_error, time_call
from attnbench.variants.compiled import compile_kernel
from attnbench.variants.graphs import without_graphs
from attnbench.variants.linear import EPS, _features, _query_rows, global_linear_attention
from attnbench.variants.reference import linear_attention

HEADS, D_HEAD = 8, 64
REFERENCE_MAX_N = 4096


def split_k_linear(q, k, v, splits: int):
    """Non-causal linear attention with the key state summed in `splits` parts (n divisible by it)."""
    fk = _features(k)
    parts = rearrange(fk, "b h (s m) d -> b h s d m", s=splits) @ rearrange(v, "b h (s m) e -> b h s m e", s=splits)
    kv = parts.sum(dim=2)  # (b h d e)
    return _query_rows(q, kv, rearrange(fk.sum(dim=-2), "b h d -> b h d 1"))


def candidates(splits: list[int]) -> dict:
    """label → f(q, k, v) on fp32 inputs, as `linear`'s core computes."""
    calls = {"eager (library)": global_linear_attention,
             "compiled (library)": lambda q, k, v: global_linear_attention(q, k, v, fused=True)}
    for s in splits:
        calls[f"eager split-K {s}"] = lambda q, k, v, s=s: split_k_linear(q, k, v, s)
        calls[f"compiled split-K {s}"] = lambda q, k, v, s=s: compile_kernel(split_k_linear, dynamic=False)(q, k, v, s)
    return calls


def top_kernels(fn, device: str, rows: int = 10) -> str:
    """The `rows` kernels (CUDA) or ops (CPU) that took the most time in one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--splits", default="8,32")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per blocked_autorange")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("linear_state: CUDA is not available here (--device cpu rehearses it)", file=sys.stderr)
        return 2
    lengths = [int(n) for n in args.lengths.split(",")]
    splits = [int(s) for s in args.splits.split(",")]
    low = torch.bfloat16 if args.device == "cuda" else torch.float32
    failed = 0
    for n in lengths:
        q, k, v = (torch.randn(1, HEADS, n, D_HEAD, device=args.device, dtype=low) for _ in range(3))
        q32, k32, v32 = (t.float() for t in (q, k, v))
        # the naive reference is quadratic (8 GiB of scores at 16384): past 4096, the eager library
        # path, itself checked against it at the shorter lengths (and by `bench check`)
        want = (linear_attention(q32, k32, v32, eps=EPS)[0] if n <= REFERENCE_MAX_N
                else global_linear_attention(q32, k32, v32))
        with torch.inference_mode(), without_graphs():
            sdpa = time_call(lambda: F.scaled_dot_product_attention(q, k, v), device=args.device,
                             min_run_time=args.min_run_time)
            print(f"n={n}: sdpa ({low}) {sdpa.median_s * 1e3:.4f} ms", flush=True)
            for label, fn in candidates([s for s in splits if n % s == 0]).items():
                err = relative_error(fn(q32, k32, v32), want)
                if not err <= 1e-4:  # NaN fails too
                    print(f"n={n}: {label}: FAIL, max rel err {err:.1e} against the reference", flush=True)
                    failed = 1
                    continue
                t = time_call(lambda fn=fn: fn(q32, k32, v32), device=args.device, min_run_time=args.min_run_time)
                print(f"n={n}: {label} {t.median_s * 1e3:.4f} ms (IQR {t.iqr_s * 1e3:.4f}), "
                      f"{t.median_s / sdpa.median_s:.2f}x sdpa, err {err:.1e}", flush=True)
        with torch.inference_mode(), without_graphs():
            compiled = candidates([])["compiled (library)"]
            print(f"n={n}: where compiled linear's time goes (one call, no graph):", flush=True)
            print(top_kernels(lambda: compiled(q32, k32, v32), args.device), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
