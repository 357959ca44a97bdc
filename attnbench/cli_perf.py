"""`bench perf` (also `python -m attnbench.benchmarks`) and `bench ceiling`: the performance benchmarks of
`attnbench.benchmarks`."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click

from attnbench.cli import Choice, cli, console, resolve_device
from attnbench.errors import AttnbenchError, StoppedWriting
from attnbench.limits import MAX_THREADS, MAX_TOKENS
from attnbench.runner.heap import CACHED, HEAPS

DTYPE_NAMES = ("auto", "fp32", "bf16", "fp16")


class NumberRange(click.FloatRange):
    """click's FloatRange, refusing NaN too: NaN passes every range check (each comparison with it
    is false), and a NaN --min-run-time made blocked_autorange grow its block towards 1e9 calls."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise AttnbenchError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise AttnbenchError(f"{what}: empty list")
    if any(v < 1 for v in values):
        raise AttnbenchError(f"{what}: expected positive integers, got {text!r}")
    return values


@cli.command("perf")
@click.option("--variants", default="all", show_default=True,
              help="Comma-separated variants (multi-head, dot-product, local, linear, additive; aliases "
                   "such as mha too) or all.")
@click.option("--lengths", default=None, help="Comma-separated n [default: 512,…,16384; --quick: 256,…,2048].")
@click.option("--batch", "batches", default=None, help="Comma-separated batch sizes [default: 1,4; --quick: 1].")
@click.option("--batched-max-n", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Batch > 1 runs only up to this n.")
@click.option("--repeat", type=click.IntRange(1, 100), default=None,
              help="Timed repeats per cell, interleaved [default: 3; --quick: 1].")
@click.option("--min-run-time", type=NumberRange(0, 60, min_open=True), default=None,
              help="Seconds per blocked_autorange [default: 0.2; --quick: 0.05].")
@click.option("--max-cell-s", type=NumberRange(min=0, min_open=True), default=45.0, show_default=True,
              help="Stop timing a series when (1 + repeat) calls are predicted to take longer.")
@click.option("--naive-limit-gib", type=NumberRange(min=0), default=2.0, show_default=True,
              help="Skip the naive reference where it would need more memory.")
@click.option("--device", type=Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=Choice(DTYPE_NAMES), default="auto", show_default=True,
              help="auto: fp32 on CPU, bf16 on CUDA.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch threads [default: torch's].")
@click.option("--heap", type=Choice(HEAPS), default=CACHED, show_default=True,
              help="CPU timings: cached pins glibc's mmap threshold at 1 GiB (where glibc accepts it; else the "
                   "rows record glibc), so big tensors are reused "
                   "from the heap as a caching allocator would; glibc keeps its defaults, so each tensor "
                   "of 32 MiB or more is mmap'd and page-faulted in on every call. Ignored on CUDA.")
@click.option("--quick", is_flag=True, help="Short lengths, one repeat: seconds to minutes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results/benchmarks", show_default=True)
@click.option("--name", default=None, help="File name stem [default: UTC time, e.g. 20260101T120000Z-cpu].")
@click.option("--compare", "baseline", type=click.Path(dir_okay=False), default=None,
              help="Baseline CSV: exit 1 when a time is > --tolerance slower on the same machine kind and --heap, "
                   "or when no row could be compared.")
@click.option("--current", type=click.Path(dir_okay=False), default=None,
              help="With --compare: check this CSV instead of running the benchmark.")
@click.option("--against", "revision", default=None,
              help="A git revision: time each variant's core as its own module was at that revision (shared code "
                   "comes from the working tree) beside the working tree's, in the same rounds (impl core@REV); "
                   "exit 1 when the working tree's is > --tolerance slower, or nothing could be compared.")
@click.option("--tolerance", type=NumberRange(min=0), default=0.10, show_default=True,
              help="The slowdown --compare and --against allow (0.10: 10 %).")
@click.option("--note", default="", help="A line added to the markdown summary (e.g. machine load).")
def perf_command(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
                 device, dtype, threads, heap, quick, out_dir, name, baseline, current, revision, tolerance,
                 note) -> int:
    """Time every variant's core and layer against SDPA, the naive reference and peers.

    Every output is verified against the reference before it is timed. Writes OUT/NAME.csv,
    OUT/NAME.png and OUT/NAME.md (the targets of issue 8, PASS/FAIL).

    \b
    Examples:
      bench perf --quick
      bench perf --variants local,linear --lengths 1024,8192 --batch 1
      bench perf --compare results/benchmarks/BASELINE.csv
      bench perf --compare results/benchmarks/BASELINE.csv --current results/benchmarks/new.csv
      bench perf --variants linear --against HEAD~1   # old and new kernel side by side
    """
    from attnbench.benchmarks import guard

    if current and not baseline:
        raise AttnbenchError("--current needs --compare BASELINE.csv")
    if current and revision:
        raise AttnbenchError("--against times a revision beside the working tree: it cannot check --current")
    if baseline:
        base = guard.read_results(baseline)  # fail early, before a long run
    if current:
        return _gate(base, guard.read_results(current), tolerance, baseline, current)
    csv = _run(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
               device, dtype, threads, heap, quick, out_dir, name, note, revision)
    code, rows = 0, guard.read_results(csv)
    if revision:
        result = guard.side_by_side(rows.to_dict("records"), tolerance=tolerance)
        if result.compared == 0:  # nothing loaded from REV, or no core verified and timed on both sides
            click.echo(f"bench perf: no core was timed beside {revision}'s; nothing compared", err=True)
            code = 1
        else:
            code = _report(result, tolerance, f"{revision}'s code timed beside it", rerun=None)
    if baseline:
        code = max(code, _gate(base, rows, tolerance, baseline, str(csv)))
    return code


def _run(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
         device, dtype, threads, heap, quick, out_dir, name, note, revision=None) -> Path:
    from attnbench.benchmarks.cases import CASES
    from attnbench.benchmarks.outputs import write_all, write_csv
    from attnbench.benchmarks.suite import FULL_LENGTHS, QUICK_LENGTHS, PerfConfig, run_suite
    from attnbench.runner.execute import DTYPES

    chosen = _variants(variants, sorted({c.variant for c in CASES if c.variant}))
    lengths = _ints(lengths, "--lengths") if lengths is not None else (QUICK_LENGTHS if quick else FULL_LENGTHS)
    batches = _ints(batches, "--batch") if batches is not None else ((1,) if quick else (1, 4))
    _check_sizes(lengths, batches, batched_max_n)
    if name is not None:
        _stem(name)
    device = resolve_device(device)
    def log(line: str) -> None:
        console.print(line, highlight=False)

    at_rev = None
    if revision:  # an unknown revision, or a module that no longer loads, fails before --out is created
        from attnbench.benchmarks.cases import select_cases
        from attnbench.benchmarks.revision import revision_classes

        at_rev = revision_classes(revision, sorted({c.variant for c in select_cases(chosen) if c.variant}), log)
    cfg = PerfConfig(
        variants=tuple(chosen),
        lengths=lengths,
        batches=batches,
        batched_max_n=batched_max_n,
        repeat=repeat if repeat is not None else (1 if quick else 3),
        min_run_time=min_run_time if min_run_time is not None else (0.05 if quick else 0.2),
        max_cell_s=max_cell_s,
        naive_limit_gib=naive_limit_gib,
        memory_probes=() if quick else PerfConfig.memory_probes,
        device=device,
        dtype=None if dtype == "auto" else DTYPES[dtype],
        threads=threads,
        heap=heap,
        against=revision,
    )
    if name is None:
        name = _utc_stamp() + f"-{device}" + ("-quick" if quick else "")
    out = _writable(out_dir)
    partial = out / f"{name}.csv"  # rewritten after each length: a killed run keeps what it measured

    def save(rows: list[dict]) -> None:
        try:
            write_csv(rows, partial)
        except OSError as exc:  # e.g. the disk filled up: stop, keeping the last CSV written
            raise StoppedWriting(f"cannot write {partial}: {exc.strerror or exc}") from None

    rows = run_suite(cfg, log=log, save=save, at_rev=at_rev)
    try:
        paths = write_all(rows, out, name, note=note)
    except OSError as exc:
        raise StoppedWriting(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    for path in paths.values():
        console.print(f"wrote {path}")
    return paths["csv"]


def _variants(text: str, known: list[str]) -> list[str]:
    """`--variants`: ["all"] or known variant names, aliases resolved (`mha` → multi-head), each
    once. `all` beside names means all, as in `bench check`; an empty list is refused, not read as all."""
    given = [v.strip() for v in text.split(",") if v.strip()]
    if not given:
        raise AttnbenchError(f"--variants: empty list (name variants, or all; known: {', '.join(known)})")
    chosen = [_benchmarked(v, known) for v in given if v != "all"]  # a typo beside all is still refused
    return ["all"] if "all" in given else list(dict.fromkeys(chosen))


def _benchmarked(name: str, known: list[str]) -> str:
    """The canonical name of a variant `bench perf` benchmarks, given its name or an alias."""
    import difflib

    from attnbench.variants.base import VARIANTS

    canonical = VARIANTS.resolve(name) if name in VARIANTS else name
    if canonical in known:
        return canonical
    close = difflib.get_close_matches(name, known, n=1)
    # not a typo: likely the user's own variant, which `bench run` times (bench perf knows
    # only the built-ins' peers and targets)
    hint = (f"; did you mean {close[0]!r}?" if close else
            "; time your own variant with bench run --kinds efficiency --plugin MODULE")
    raise AttnbenchError(f"--variants: no benchmark for {name!r}{hint} (known: {', '.join(known)})")


def _check_sizes(lengths: tuple[int, ...], batches: tuple[int, ...], batched_max_n: int) -> None:
    """Refuse a batch × n past MAX_TOKENS before anything is timed, not when its inputs fail
    to allocate. Each batch also calibrates the naive reference at min(CALIBRATION_N, n)."""
    from attnbench.benchmarks.suite import CALIBRATION_N

    calibration = min(CALIBRATION_N, *lengths)
    for batch in batches:
        n = max([calibration] + [n for n in lengths if batch == 1 or n <= batched_max_n])
        _check_tokens(f"--batch {batch} × --lengths {n}", batch * n, inputs=4)  # q, k, v and x


def _check_tokens(what: str, tokens: int, inputs: int) -> None:
    """Refuse one call of more than MAX_TOKENS tokens; `inputs`: its (tokens, d_model) fp32 inputs."""
    from attnbench.benchmarks.cases import D_MODEL

    if tokens > MAX_TOKENS:
        gib = inputs * tokens * D_MODEL * 4 / 2**30
        raise AttnbenchError(f"{what}: {tokens} tokens in one call, more than {MAX_TOKENS} "
                             f"(its inputs alone would take {gib:.3g} GiB in fp32)")


def _stem(name: str) -> str:
    """`--name`: a file name stem; given empty it is refused, not replaced by the default."""
    if "/" in name or os.sep in name or name in ("", ".", ".."):
        raise AttnbenchError(f"--name {name!r}: a file name stem, without '/'")
    return name


def _utc_stamp() -> str:
    """The default file name's start: the UTC time to the second, e.g. 20260101T120000Z."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _writable(out_dir: str) -> Path:
    """`--out`, created and checked for writing now, not after minutes of timing."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise AttnbenchError(f"--out {out}: {exc.strerror or exc}") from None
    return out


@cli.command("ceiling")
@click.option("--lengths", default="1024,2048,4096", show_default=True, help="Comma-separated n.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch threads [default: torch's].")
@click.option("--repeat", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Interleaved rounds per length.")
@click.option("--min-run-time", type=NumberRange(0, 60, min_open=True), default=0.2, show_default=True,
              help="Seconds per blocked_autorange.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results/benchmarks", show_default=True)
@click.option("--name", default=None, help="File name stem [default: UTC time, e.g. 20260101T120000Z-cpu-ceiling].")
def ceiling_command(lengths, threads, repeat, min_run_time, out_dir, name) -> None:
    """Time attention's GEMM shapes, attention built from its block GEMMs and SDPA against a square
    matmul in the same rounds (B=1, H=8, d_head=64, fp32, CPU): what stands between SDPA and issue
    8's 75 %-of-matmul target. Writes OUT/NAME.csv and OUT/NAME.md.

    \b
    Example:
      bench ceiling --threads 2
    """
    from attnbench.benchmarks.ceiling import run_ceiling, write_ceiling

    lengths = _ints(lengths, "--lengths")
    _check_tokens(f"--lengths {max(lengths)}", max(lengths), inputs=3)  # q, k, v: (1, 8, n, 64) each
    name = _stem(name) if name is not None else _utc_stamp() + "-cpu-ceiling"
    out = _writable(out_dir)
    rows = run_ceiling(lengths, threads=threads, repeat=repeat, min_run_time=min_run_time,
                       log=lambda line: console.print(line, highlight=False))
    try:
        paths = write_ceiling(rows, out, name)
    except OSError as exc:
        raise StoppedWriting(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    for path in paths.values():
        console.print(f"wrote {path}")


def _gate(base, current, tolerance, baseline, current_name) -> int:
    """The regression gate against `baseline`: 1 on a regression, and when nothing was compared
    (else a gate on another machine, thread count or heap would pass every regression)."""
    from attnbench.benchmarks import guard

    result = guard.compare(base, current, tolerance=tolerance)
    if result.compared == 0:
        why = guard.why_nothing_compared(base, current, baseline, current_name)
        click.echo(f"bench perf: nothing compared: {why}", err=True)
        return 1
    return _report(result, tolerance, baseline, rerun=f"On a shared machine, confirm before believing it: "
                   f"{_rerun(result.regressions, baseline)}")


def _report(result, tolerance, against: str, rerun: str | None) -> int:
    """Print a comparison's outcome; 1 when something regressed."""
    if result.regressions:
        click.echo(f"{len(result.regressions)} of {result.compared} timings regressed by more than "
                   f"{tolerance:.0%} against {against}:")
        for reg in result.regressions:
            click.echo(f"  {reg}")
        if rerun:
            click.echo(rerun)
        return 1
    click.echo(f"no regression: {result.compared} timings within {tolerance:.0%} of {against}")
    return 0


def _rerun(regressions, baseline) -> str:
    """The `bench perf` command that times only the regressed cases, lengths and batches again."""
    from attnbench.benchmarks.cases import CASES

    variant_of = {case.label: case.variant for case in CASES}
    variants = sorted({variant_of[r.case] for r in regressions if variant_of.get(r.case)})

    def join(values) -> str:
        return ",".join(map(str, sorted(set(values))))

    return (f"bench perf --variants {join(variants) or 'all'} --lengths {join(r.n for r in regressions)} "
            f"--batch {join(r.batch for r in regressions)} --compare {baseline}")


def main(argv: list[str] | None = None) -> None:
    """`python -m attnbench.benchmarks [OPTIONS]`: the same as `bench perf [OPTIONS]`."""
    from attnbench.cli import main as bench_main

    bench_main(["perf", *(sys.argv[1:] if argv is None else argv)])
