"""What a CUDA graph's replay (variants/graphs.py) changes: each compiled kernel's call without
gradients timed plainly and replayed, beside dense SDPA, in the same rounds.

    python -m attnbench.benchmarks.graph_replay --out results/benchmarks [--lengths 2048,4096] [--rounds 5]

Inputs as `bench perf`'s core rows: b = 1, h = 8, d = 64, bf16, in inference mode. Each round
times every row once (torch.utils.benchmark, 0.2 s each); the page gives the median over rounds
of each row's median, its rounds' range, and its ratio to SDPA's time at the same n. Each
replayed output is first checked against the plain call's (the graph's replay must compute the
same thing). Writes graph-replay-NAME.csv and .md. CUDA only: on CPU there is no graph to replay.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from attnbench.variants.compiled import compile_kernel
from attnbench.variants.graphs import forget_graphs, replayed
from attnbench.variants.linear import _causal_step, _whole
from attnbench.variants.local_flex import _cached_block_mask, _flex

HEADS, D_HEAD = 8, 64


def rows_at(n: int) -> dict[str, tuple]:
    """label → (the plain call, the replayed call), as the compiled paths make them at length n."""
    q, k, v = (torch.randn(1, HEADS, n, D_HEAD, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flex = compile_kernel(_flex, dynamic=False)
    whole = compile_kernel(_whole, dynamic=None)
    step = compile_kernel(_causal_step, dynamic=False)
    tril = torch.ones(64, 64, dtype=torch.bool, device="cuda").tril()
    calls = {"sdpa": (lambda: F.scaled_dot_product_attention(q, k, v), None)}
    for window in (128, 256):
        mask = _cached_block_mask(n, window, False, q.device)
        calls[f"local(window={window}, kernel=compiled)"] = (
            lambda m=mask: flex(q, k, v, m), lambda m=mask: replayed(flex, q, k, v, m))
    calls["linear(kernel=compiled)"] = (lambda: whole(q, k, v, None), lambda: replayed(whole, q, k, v, None))
    # the causal form's one step over the whole sequence, as on CUDA up to n = 16384 at b·h = 8
    calls["linear(causal, kernel=compiled)"] = (
        lambda: step(q, k, v, None, tril, None)[0], lambda: replayed(step, q, k, v, None, tril, None)[0])
    return calls


def timed(fn) -> float:
    from torch.utils import benchmark

    torch.cuda.synchronize()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="cuda")
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("graph_replay: CUDA graphs need a CUDA device; none here", file=sys.stderr)
        return 2
    lengths = [int(n) for n in args.lengths.split(",")]
    results = []
    with torch.inference_mode():
        for n in lengths:
            forget_graphs()
            calls = rows_at(n)
            series: dict[tuple[str, str], list[float]] = {}
            for label, (plain, graphed) in calls.items():
                want = plain()  # compiles; then the replay must give the same output
                if graphed is not None:
                    err = ((graphed().float() - want.float()).abs().max() / want.float().abs().max()).item()
                    if err > 1e-2:
                        print(f"graph_replay: {label} at n={n}: replay differs from the plain call, rel err {err:.2e}",
                              file=sys.stderr)
                        return 1
            for _ in range(args.rounds):
                for label, (plain, graphed) in calls.items():
                    for how, fn in (("plain", plain), ("replayed", graphed)):
                        if fn is not None:
                            series.setdefault((label, how), []).append(timed(fn))
            sdpa = statistics.median(series[("sdpa", "plain")])
            for (label, how), times in series.items():
                median = statistics.median(times)
                results.append({"n": n, "case": label, "call": how, "median_ms": median * 1e3,
                                "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3, "vs_sdpa": median / sdpa,
                                "rounds": len(times), "device": torch.cuda.get_device_name(), "torch": torch.__version__})
                print(f"n={n:6d} {label:34s} {how:8s} {median * 1e3:8.4f} ms  {median / sdpa:5.2f}x sdpa", flush=True)
    frame = pd.DataFrame(results)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / f"graph-replay-{args.name}.csv", index=False)
    table = frame.pivot_table(index=["case", "call"], columns="n", values="median_ms").round(4)
    ratios = frame.pivot_table(index=["case", "call"], columns="n", values="vs_sdpa").round(2)
    (args.out / f"graph-replay-{args.name}.md").write_text(
        f"# CUDA graph replay: {torch.cuda.get_device_name()}, torch {torch.__version__}\n\n"
        f"b = 1, h = {HEADS}, d = {D_HEAD}, bf16, inference mode; median of {args.rounds} interleaved rounds (ms)\n\n"
        f"```\n{table.to_string()}\n```\n\nTime / SDPA's at the same n\n\n```\n{ratios.to_string()}\n```\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
