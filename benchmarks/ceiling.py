"""The matmul ceiling of attention's own shapes: what fraction of the square-matmul FLOP/s the GEMMs
that attention is made of reach, beside the fused SDPA kernel, at B=1, H=8, d_head=64, fp32.

Why: issue 8 asks `multi-head` (torch's `scaled_dot_product_attention`) to reach ≥ 75 % of the
measured matmul FLOP/s, the peak being a square 1024³ fp32 matmul timed in the same run. Attention
is two batched GEMMs with an inner or outer dimension of d_head = 64: QKᵀ (h, n, d) @ (h, d, n) and
P·V (h, n, n) @ (h, n, d), or, blocked as flash kernels do, the same two for a block of 256 queries
against all keys (`qk_block`, `pv_block`); `blocked` is attention built from that pair with ATen's
softmax between them. If the block pair, timed on its own, falls short of 75 % of the square
matmul, no blocked kernel can be expected to reach it at d_head = 64 on that machine; if it
reaches it, what holds attention below is elsewhere (the softmax, a kernel's own overhead).

Every shape of one length is timed in the same interleaved rounds with the square matmul (as in
`suite._time_all`), so each fraction is taken against the machine's speed of that moment. Run it
as `bench ceiling --threads 2` (or `python -m attnbench.benchmarks.ceiling`); it writes
`<name>.csv` and `<name>.md`.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from attnbench.benchmarks.suite import TOLERANCE, relative_error
from attnbench.runner.environment import git_sha, machine_name
from attnbench.runner.heap import CACHED, set_heap
from attnbench.runner.measure import MATMUL_SIZE, time_call
from attnbench.runner.store import replace_file, threads_text

TARGET = 0.75  # issue 8: multi-head (SDPA) at ≥ 75 % of the square matmul's FLOP/s
QUERY_BLOCK = 256  # rows of the query block in `qk_block` and `pv_block` (capped at n)
BYTES_PER_ELEMENT = 4  # fp32
SQUARE, QK, PV, QK_BLOCK, PV_BLOCK, SDPA = "square", "qk", "pv", "qk_block", "pv_block", "sdpa"
BLOCKED = "blocked"  # attention built from qk_block, softmax and pv_block, block by block
SHAPES = (SQUARE, QK, PV, QK_BLOCK, PV_BLOCK, BLOCKED, SDPA)
GEMMS = (QK, PV, QK_BLOCK, PV_BLOCK)  # the attention-shaped GEMMs (SDPA is the fused kernel)
OK = "ok"

COLUMNS = (
    "shape", "operands", "n", "heads", "d_head", "status", "flops", "tensor_bytes", "median_s", "iqr_s",
    "rounds", "runs", "flops_per_s", "fraction", "square_flops_per_s", "device", "dtype", "threads",
    "heap", "machine", "torch", "git_sha",
)


@dataclass(frozen=True)
class Shape:
    """One timed call at one length: operand shapes, FLOPs, and the bytes of its operands and output."""

    name: str
    operands: tuple[tuple[int, ...], ...]  # the shapes of the call's inputs
    output: tuple[int, ...]
    flops: int

    def label(self) -> str:
        """The operands as text: `(8,2048,64)@(8,64,2048)` for a GEMM, `q,k,v (1,8,2048,64)` for SDPA."""
        if self.name in (SDPA, BLOCKED):
            return "q,k,v (" + ",".join(map(str, self.operands[0])) + ")"
        return "@".join("(" + ",".join(map(str, dims)) + ")" for dims in self.operands)

    def tensor_bytes(self) -> int:
        """fp32 bytes of the inputs and the output (kernel scratch excluded)."""
        return BYTES_PER_ELEMENT * sum(_numel(dims) for dims in (*self.operands, self.output))


def _numel(dims: tuple[int, ...]) -> int:
    total = 1
    for size in dims:
        total *= size
    return total


def shapes_at(n: int, heads: int, d_head: int, square: int) -> list[Shape]:
    """The square matmul and attention's GEMMs and SDPA at length n (FLOPs: 2 per multiply-add)."""
    h, d, b = heads, d_head, min(QUERY_BLOCK, n)
    return [
        Shape(SQUARE, ((square, square), (square, square)), (square, square), 2 * square**3),
        Shape(QK, ((h, n, d), (h, d, n)), (h, n, n), 2 * h * n * n * d),
        Shape(PV, ((h, n, n), (h, n, d)), (h, n, d), 2 * h * n * n * d),
        Shape(QK_BLOCK, ((h, b, d), (h, d, n)), (h, b, n), 2 * h * b * d * n),
        Shape(PV_BLOCK, ((h, b, n), (h, n, d)), (h, b, d), 2 * h * b * n * d),
        # q, k, v (1, h, n, d); QKᵀ and P·V: 4·h·n²·d, as torch's FlopCounterMode counts SDPA
        Shape(BLOCKED, ((1, h, n, d),) * 3, (1, h, n, d), 4 * h * n * n * d),
        Shape(SDPA, ((1, h, n, d),) * 3, (1, h, n, d), 4 * h * n * n * d),
    ]


def _call(shape: Shape, device: str, gen: torch.Generator) -> Callable[[], torch.Tensor]:
    """A no-argument call of the shape's op on fresh random fp32 operands."""
    operands = [torch.randn(dims, generator=gen).to(device) for dims in shape.operands]
    if shape.name == SQUARE:
        a, b = operands
        return lambda: a @ b
    if shape.name == SDPA:
        q, k, v = operands
        return lambda: F.scaled_dot_product_attention(q, k, v)
    if shape.name == BLOCKED:
        q, k, v = operands
        return lambda: blocked_attention(q, k, v)
    a, b = operands
    return lambda: torch.bmm(a, b)


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = QUERY_BLOCK) -> torch.Tensor:
    """softmax(q kᵀ/√d) v from the block GEMMs: per block of queries, `qk_block`, a softmax in
    place, `pv_block` into the output. What a path built from those GEMMs and ATen's softmax costs;
    equal to SDPA up to rounding (tests)."""
    out, keys = torch.empty_like(q), k.transpose(-2, -1)
    for start in range(0, q.shape[-2], block):
        rows = slice(start, start + block)
        scores = torch.matmul(q[:, :, rows] * q.shape[-1] ** -0.5, keys)
        torch.matmul(torch.softmax(scores, dim=-1, out=scores), v, out=out[:, :, rows])
    return out


def run_ceiling(
    lengths: tuple[int, ...] = (1024, 2048, 4096),
    heads: int = 8,
    d_head: int = 64,
    threads: int | None = None,
    repeat: int = 5,
    min_run_time: float = 0.2,
    device: str = "cpu",
    *,
    limit_gib: float = 2.0,
    log: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """One row per (shape, n): median and IQR over `repeat` interleaved rounds, FLOP/s and the
    fraction of the square matmul timed in the same rounds. A shape whose operands and output would
    exceed `limit_gib` is not built: its row says `skipped: …`."""
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        heap = set_heap(device, CACHED, log)  # before anything is timed: one condition for every row
        common = {
            "heads": heads, "d_head": d_head, "device": device, "dtype": "float32",
            "threads": torch.get_num_threads(), "heap": heap,
            "machine": machine_name(device),
            "torch": torch.__version__, "git_sha": git_sha(),
        }
        log(f"{common['machine']}, {threads_text(common['threads'])}, heap {heap}, {repeat} rounds per length")
        rows: list[dict] = []
        with torch.inference_mode():
            for n in lengths:
                rows += _one_length(n, common, repeat, min_run_time, device, limit_gib, log)
        return rows
    finally:
        torch.set_num_threads(threads_before)


def _one_length(n, common, repeat, min_run_time, device, limit_gib, log) -> list[dict]:
    square = MATMUL_SIZE["cuda" if torch.device(device).type == "cuda" else "cpu"]
    shapes = shapes_at(n, common["heads"], common["d_head"], square)
    gen = torch.Generator().manual_seed(n)
    calls, status = {}, {}
    for shape in shapes:
        need = shape.tensor_bytes()
        if need > limit_gib * 2**30:
            status[shape.name] = f"skipped: needs {need / 2**30:.2f} GiB (> {limit_gib:g} GiB limit)"
        else:
            calls[shape.name], status[shape.name] = _call(shape, device, gen), OK
    if BLOCKED in calls:  # verified against SDPA before it is timed, like every kernel here
        dims = (1, common["heads"], n, common["d_head"])
        q, k, v = (torch.randn(dims, generator=gen).to(device) for _ in range(3))
        err = relative_error(blocked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
        if not err <= TOLERANCE[torch.float32]:
            status[BLOCKED] = f"mismatch: max|Δ|/max|SDPA| = {err:.1e}"
            del calls[BLOCKED]
    times: dict[str, list] = {name: [] for name in calls}
    for r in range(repeat):
        order = list(calls) if r % 2 == 0 else list(calls)[::-1]  # alternate the order against drift
        for name in order:
            times[name].append(time_call(calls[name], device=device, min_run_time=min_run_time,
                                         warmup=1 if r == 0 else 0))
    rows = [_row(shape, n, status[shape.name], times.get(shape.name, []), common) for shape in shapes]
    peak = rows[0]["flops_per_s"]  # the square matmul of these rounds
    for row in rows:
        row["square_flops_per_s"] = peak
        if peak and row["flops_per_s"] is not None:
            row["fraction"] = row["flops_per_s"] / peak
        log(_line(row))
    return rows


def _row(shape: Shape, n: int, status: str, timings: list, common: dict) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(common)
    row.update(shape=shape.name, operands=shape.label(), n=n, status=status, flops=shape.flops,
               tensor_bytes=shape.tensor_bytes())
    if timings:
        medians = [t.median_s for t in timings]
        row.update(median_s=statistics.median(medians), iqr_s=_iqr(medians), rounds=len(medians),
                   runs=sum(t.runs for t in timings))
        row["flops_per_s"] = shape.flops / row["median_s"]
    return row


def _iqr(values: list[float]) -> float | None:
    """Interquartile range of the per-round medians; None for a single round, which shows no spread."""
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def _line(row: dict) -> str:
    if row["median_s"] is None:
        return f"n={row['n']:>5} {row['shape']:<8} {row['status']}"
    fraction = f"{row['fraction']:6.1%}" if row["fraction"] is not None else "     —"
    spread = f"{row['iqr_s'] * 1e3:.3f}" if row["iqr_s"] is not None else "n/a"
    return (f"n={row['n']:>5} {row['shape']:<8} {row['median_s'] * 1e3:9.3f} ms ± {spread}  "
            f"{row['flops_per_s'] / 1e9:7.1f} GFLOP/s  {fraction} of square")


# ------------------------------------------------------------------------------- outputs
def ceiling_table(rows: list[dict]) -> str:
    """Markdown: shape × n → GFLOP/s (% of that length's square matmul), or the status."""
    lengths = sorted({r["n"] for r in rows})
    by_key = {(r["shape"], r["n"]): r for r in rows}
    head = ["shape", "operands (largest n)"] + [f"n={n}" for n in lengths]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape in [s for s in SHAPES if any(r["shape"] == s for r in rows)]:
        cells = [shape, by_key[(shape, lengths[-1])]["operands"]]
        for n in lengths:
            row = by_key.get((shape, n))
            if row is None:
                cells.append("—")
            elif row["flops_per_s"] is None:
                cells.append(row["status"])
            elif row["fraction"] is None:
                cells.append(f"{row['flops_per_s'] / 1e9:.1f}")
            else:
                cells.append(f"{row['flops_per_s'] / 1e9:.1f} ({row['fraction']:.0%})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """What the run shows about the 75 % target, from quantities taken at the same length only:
    the two block GEMMs together (the GEMM work of a blocked kernel), attention built from them
    (`blocked`) and SDPA; a conclusion only where it holds at every length timed."""
    by_key = {(r["shape"], r["n"]): r["fraction"] for r in rows if r["fraction"] is not None}
    pairs = block_pairs(rows)
    lengths = [n for n in sorted(pairs) if (SDPA, n) in by_key]
    if not lengths:
        return "Too few shapes were timed against a square matmul to compare with the 75 % target."
    pair = [pairs[n] for n in lengths]
    sdpa = [by_key[(SDPA, n)] for n in lengths]
    blocked = [by_key.get((BLOCKED, n)) for n in lengths]
    text = (f"Against the {TARGET:.0%} target of issue 8, at n = {', '.join(map(str, lengths))}: the two "
            f"GEMMs of a {QUERY_BLOCK}-query block together (qk_block then pv_block) reach {_span(pair)} of "
            "the square matmul")
    if None not in blocked:
        text += f", attention built from them with ATen's softmax between them (`blocked`) {_span(blocked)}"
    text += f", and SDPA {_span(sdpa)}."
    if min(sdpa) >= TARGET:
        return text + " SDPA meets the target at every length."
    if max(pair) < TARGET:
        return text + (" The block GEMMs alone stay below the target at every length: at d_head = "
                       f"{rows[0]['d_head']} these GEMM shapes put it out of reach here.")
    if min(pair) >= TARGET and None not in blocked and max(blocked) < TARGET:
        return text + (" The block GEMMs reach the target on their own at every length; attention built "
                       "from them does not, so the GEMM shapes are not what holds it below. What SDPA's "
                       "fused kernel loses beyond its GEMMs this benchmark does not separate.")
    return text + " The lengths disagree; see the table."


def block_pairs(rows: list[dict]) -> dict[int, float]:
    """{n: FLOP/s of qk_block and pv_block run back to back, as a fraction of the square matmul},
    for each length where both were timed."""
    by_key = {(r["shape"], r["n"]): r for r in rows}
    pairs = {}
    for n in sorted({r["n"] for r in rows}):
        qk, pv = by_key.get((QK_BLOCK, n)), by_key.get((PV_BLOCK, n))
        if qk and pv and qk["median_s"] and pv["median_s"] and qk["square_flops_per_s"]:
            rate = (qk["flops"] + pv["flops"]) / (qk["median_s"] + pv["median_s"])
            pairs[n] = rate / qk["square_flops_per_s"]
    return pairs


def block_pair_fractions(rows: list[dict]) -> list[float]:
    """`block_pairs`' fractions, by length."""
    return list(block_pairs(rows).values())


def _span(fractions: list[float]) -> str:
    low, high = min(fractions), max(fractions)
    return f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%}–{high:.0%}"


def conditions(rows: list[dict]) -> str:
    """The run's conditions as one paragraph."""
    first = rows[0]
    rounds = max((r["rounds"] or 0) for r in rows)
    return (f"Machine: {first['machine']} · device {first['device']} · {threads_text(first['threads'])} · heap "
            f"{first['heap']} · torch {first['torch']} · attnbench {first['git_sha'] or 'unknown revision'} · "
            f"{first['dtype']}, B = 1, H = {first['heads']}, d_head = {first['d_head']}. Each length's shapes "
            f"and the square {MATMUL_SIZE['cuda' if first['device'].startswith('cuda') else 'cpu']}³ matmul "
            f"are timed in the same {rounds} interleaved rounds (`torch.utils.benchmark` `blocked_autorange` "
            "per round, inference mode); time is the median over rounds, FLOPs count 2 per multiply-add "
            "(SDPA: 4·h·n²·d), and each percentage is of the square matmul of the same length.")


def write_ceiling(rows: list[dict], out_dir: Path | str, name: str) -> dict[str, Path]:
    """`<name>.csv` (every row, COLUMNS in order) and `<name>.md` (table, verdict, conditions),
    each replaced atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    csv = replace_file(out_dir / f"{name}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    lines = [f"# Matmul ceiling at attention's shapes: {name}", "", verdict(rows), "",
             ceiling_table(rows), "", "GFLOP/s (% of the square matmul timed in the same rounds).", ""]
    if rows:
        lines += [conditions(rows), ""]
    lines += [f"Data: [{csv.name}]({csv.name})", ""]
    md = replace_file(out_dir / f"{name}.md", lambda tmp: tmp.write_text("\n".join(lines)))
    return {"csv": csv, "md": md}


def main(argv: list[str] | None = None) -> None:
    """`python -m attnbench.benchmarks.ceiling [OPTIONS]`: the same as `bench ceiling [OPTIONS]`."""
    from attnbench.cli import main as bench_main

    bench_main(["ceiling", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
