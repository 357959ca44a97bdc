"""What a CUDA graph's replay (variants/graphs.py) changes: each compiled kernel's core, as
`bench perf` calls it, timed with replay and without (`without_graphs`), beside dense SDPA, in the
same rounds.

    python -m attnbench.benchmarks.graph_replay --out results/benchmarks [--lengths 2048,4096] [--rounds 5]

Inputs as `bench perf`'s core rows: b = 1, h = 8, d = 64, bf16, in inference mode; the cores are
the layers' own (`linear`'s converts to fp32 and back, as it always does). Each round times every
row once (torch.utils.benchmark, 0.2 s each); the page gives the median over rounds of each row's
median, its rounds' range, and its ratio to SDPA's time at the same n. The replayed outputs are
first checked against the plain call's, on two input sets, the first output held. Writes graph-replay-NAME.csv and .md. On CPU
(`--device cpu`, a rehearsal of this script) there is no graph: both rows are the plain call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from attnbench.runner.environment import git_sha, machine_name
from attnbench.runner.measure import relative_error, time_call
from attnbench.variants.base import build_variant
from attnbench.variants.graphs import forget_graphs, without_graphs

HEADS, D_HEAD = 8, 64
CASES = {  # label → (variant, options, causal): the compiled cases of `bench perf`
    "local(window=128, kernel=compiled)": ("local", {"window": 128, "kernel": "compiled"}, False),
    "local(window=256, kernel=compiled)": ("local", {"window": 256, "kernel": "compiled"}, False),
    "linear(kernel=compiled)": ("linear", {"kernel": "compiled"}, False),
    "linear(causal, kernel=compiled)": ("linear", {"kernel": "compiled"}, True),
}


def rows_at(n: int, device: str) -> tuple[dict[str, tuple], tuple]:
    """label → (the plain call, the replayed call) of each compiled core at length n (SDPA's
    alone), and the (q, k, v) they all read: refill them in place for other inputs."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(1, HEADS, n, D_HEAD, device=device, dtype=dtype) for _ in range(3))
    calls = {"sdpa": (lambda: F.scaled_dot_product_attention(q, k, v), None)}
    for label, (variant, options, causal) in CASES.items():
        layer = build_variant(variant, d_model=HEADS * D_HEAD, n_heads=HEADS, **options)
        layer = layer.to(device=device, dtype=dtype).eval()
        core = lambda lay=layer, c=causal: lay.core(q, k, v, None, c, False)[0]  # noqa: E731

        def plain(core=core):
            with without_graphs():
                return core()

        calls[label] = (plain, core)
    return calls, (q, k, v)


def replay_error(plain, graphed, inputs: tuple) -> float:
    """The largest relative difference between replayed and plain outputs over two input sets,
    the first replay's output held while the second runs (a replay must copy each call's inputs
    in and hand out its own output)."""
    first_want, first = plain(), graphed()  # the first replayed call captures
    for t in inputs:
        t.normal_()
    second_want, second = plain(), graphed()
    return max(relative_error(first, first_want), relative_error(second, second_want))


def page(frame: pd.DataFrame, *, machine: str, rounds: int, dtype: str) -> str:
    """The results as markdown: per case and call, the median over rounds [its rounds' range] in
    ms, then each median ÷ SDPA's at the same n."""
    lengths = sorted(frame["n"].unique())
    head = "| case | call | " + " | ".join(f"n={n} ms" for n in lengths) + " | " + \
        " | ".join(f"÷SDPA n={n}" for n in lengths) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(lengths))]
    for (case, call), rows in frame.groupby(["case", "call"], sort=False):
        by_n = {r.n: r for r in rows.itertuples()}
        times = [f"{by_n[n].median_ms:.4f} [{by_n[n].min_ms:.4f}–{by_n[n].max_ms:.4f}]" if n in by_n else ""
                 for n in lengths]
        ratios = [f"{by_n[n].vs_sdpa:.2f}" if n in by_n else "" for n in lengths]
        lines.append(f"| {case} | {call} | " + " | ".join(times + ratios) + " |")
    return (f"# Graph replay: {machine}, torch {torch.__version__}, attnbench {git_sha()}\n\n"
            f"`python -m attnbench.benchmarks.graph_replay`: each compiled core as `bench perf` calls it, "
            f"b = 1, h = {HEADS}, d = {D_HEAD}, {dtype}, inference mode; plain = `without_graphs()`, "
            f"replayed = a CUDA graph's replay (variants/graphs.py). Median over {rounds} interleaved rounds "
            f"[lowest–highest round], ms.\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", help="file name stem after graph-replay- [default: the device]")
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per blocked_autorange")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a rehearsal of the script (no graphs there)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("graph_replay: CUDA graphs need a CUDA device; none here (--device cpu rehearses the script)",
              file=sys.stderr)
        return 2
    lengths = [int(n) for n in args.lengths.split(",")]
    name = args.name or args.device
    machine = machine_name(args.device)
    results = []
    with torch.inference_mode():
        for n in lengths:
            forget_graphs()
            calls, inputs = rows_at(n, args.device)
            series: dict[tuple[str, str], list[float]] = {}
            for label, (plain, graphed) in calls.items():
                if graphed is not None:
                    err = replay_error(plain, graphed, inputs)
                    if err > 1e-2:
                        print(f"graph_replay: {label} at n={n}: replay differs from the plain call, rel err {err:.2e}",
                              file=sys.stderr)
                        return 1
            for _ in range(args.rounds):
                for label, (plain, graphed) in calls.items():
                    for how, fn in (("plain", plain), ("replayed", graphed)):
                        if fn is not None:
                            series.setdefault((label, how), []).append(
                                time_call(fn, device=args.device, min_run_time=args.min_run_time, warmup=0).median_s)
            sdpa = statistics.median(series[("sdpa", "plain")])
            for (label, how), times in series.items():
                median = statistics.median(times)
                results.append({"n": n, "case": label, "call": how, "median_ms": median * 1e3,
                                "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3, "vs_sdpa": median / sdpa,
                                "rounds": len(times), "machine": machine, "torch": torch.__version__,
                                "git_sha": git_sha()})
                print(f"n={n:6d} {label:34s} {how:8s} {median * 1e3:8.4f} ms  {median / sdpa:5.2f}x sdpa", flush=True)
    frame = pd.DataFrame(results)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / f"graph-replay-{name}.csv", index=False)
    dtype = "bf16" if args.device == "cuda" else "fp32"
    (args.out / f"graph-replay-{name}.md").write_text(page(frame, machine=machine, rounds=args.rounds, dtype=dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
