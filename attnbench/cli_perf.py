"""`bench perf` (also `python -m attnbench.benchmarks`) and `bench ceiling`: the performance benchmarks of
`attnbench.benchmarks`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from attnbench import perf_gate, perf_run
from attnbench.cli import Choice, NonEmptyPath, cli, console, outliving_a_closed_stdout
from attnbench.errors import AttnbenchError, StoppedWriting
from attnbench.limits import MAX_THREADS
from attnbench.runner.heap import CACHED, HEAPS


class NumberRange(click.FloatRange):
    """click's FloatRange, refusing NaN too: NaN passes every range check (each comparison with it
    is false), and a NaN --min-run-time made blocked_autorange grow its block towards 1e9 calls.
    `finite`: infinity too (an infinite --tolerance passed every regression)."""

    def __init__(self, *args, finite: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.finite = finite

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if self.finite and math.isinf(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


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
@click.option("--dtype", type=Choice(perf_run.DTYPE_NAMES), default="auto", show_default=True,
              help="auto: fp32 on CPU, bf16 on CUDA.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch threads [default: torch's].")
@click.option("--heap", type=Choice(HEAPS), default=CACHED, show_default=True,
              help="CPU timings: cached pins glibc's mmap threshold at 1 GiB (where glibc accepts it; else the "
                   "rows record glibc), so big tensors are reused "
                   "from the heap as a caching allocator would; glibc keeps its defaults, so each tensor "
                   "of 32 MiB or more is mmap'd and page-faulted in on every call. Ignored on CUDA.")
@click.option("--quick", is_flag=True, help="Short lengths, one repeat: seconds to minutes.")
@click.option("--out", "out_dir", type=NonEmptyPath("name a folder, e.g. --out results/benchmarks", file_okay=False),
              default="results/benchmarks", show_default=True)
@click.option("--name", default=None, help="File name stem [default: UTC time, e.g. 20260101T120000Z-cpu].")
@click.option("--overwrite", is_flag=True, help="Replace OUT/NAME.csv, .png and .md where they exist (else refused).")
@click.option("--compare", "baseline", type=NonEmptyPath("name a baseline CSV", dir_okay=False), default=None,
              help="Baseline CSV: exit 1 when a time is > --tolerance slower on the same machine kind, --threads and "
                   "--heap, or when no row could be compared.")
@click.option("--current", type=NonEmptyPath("name a CSV of bench perf", dir_okay=False), default=None,
              help="With --compare: check this CSV instead of running the benchmark.")
@click.option("--against", "revision", default=None,
              help="A git revision: time each variant's core and layer as its own module was at that revision (shared "
                   "code comes from the working tree) beside the working tree's, in the same rounds (impls core@REV, "
                   "layer@REV); "
                   "exit 1 when the working tree's is > --tolerance slower, or nothing could be compared.")
@click.option("--confirm", is_flag=True,
              help="With --compare: time each flagged core or layer row again beside the baseline's own code "
                   "(--against the git revision its row records), in the same rounds, and fail it only if it is slower "
                   "there too, or if that cannot show the cause (shared variants/ code changed since, another torch, "
                   "no usable revision; with --current, another machine or other kernels): then the flag stands. "
                   "Flagged SDPA, peer and naive rows are listed, not failed.")
@click.option("--tolerance", type=NumberRange(min=0, finite=True), default=0.10, show_default=True,
              help="The slowdown --compare and --against allow (0.10: 10 %).")
@click.option("--note", default="", help="A line added to the markdown summary (e.g. machine load).")
@click.option("--plugin", "plugins", multiple=True, hidden=True, expose_value=True)  # refused below, with the way
def perf_command(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
                 device, dtype, threads, heap, quick, out_dir, name, overwrite, baseline, current, revision, confirm,
                 tolerance, note, plugins) -> int:
    """Time every variant's core and layer against SDPA, the naive reference and peers.

    Every output is verified against the reference before it is timed. Writes OUT/NAME.csv,
    OUT/NAME.png and OUT/NAME.md (the targets of issue 8, PASS/FAIL).

    \b
    Examples:
      bench perf --quick
      bench perf --variants local,linear --lengths 1024,8192 --batch 1
      bench perf --compare results/benchmarks/BASELINE.csv
      bench perf --compare results/benchmarks/BASELINE.csv --current results/benchmarks/new.csv
      bench perf --compare results/benchmarks/BASELINE.csv --confirm   # flags timed again beside the old code
      bench perf --variants linear --against HEAD~1   # old and new kernel side by side
    """
    from attnbench.benchmarks import guard

    if plugins:  # the cases, references and peers are the built-ins'; a user's layer is timed by bench run
        raise AttnbenchError("bench perf times the built-in variants only; time a plugin's layer with "
                             f"bench run --kinds efficiency --plugin {plugins[0]} --variants NAME")
    if current and not baseline:
        raise AttnbenchError("--current needs --compare BASELINE.csv")
    if confirm and not baseline:
        raise AttnbenchError("--confirm needs --compare BASELINE.csv")
    if revision is not None and not revision.strip():
        raise AttnbenchError("--against: empty revision; name a git revision, e.g. --against HEAD~1")
    if confirm and revision:
        raise AttnbenchError("--confirm times flagged rows beside the baseline's revision: it cannot go with --against")
    if current and revision:
        raise AttnbenchError("--against times a revision beside the working tree: it cannot check --current")
    settings = dict(variants=variants, lengths=lengths, batches=batches, batched_max_n=batched_max_n, repeat=repeat,
                    min_run_time=min_run_time, max_cell_s=max_cell_s, naive_limit_gib=naive_limit_gib, device=device,
                    dtype=dtype, threads=threads, heap=heap, quick=quick)
    if name is not None:
        perf_run.stem(name)
    base = None
    if baseline:
        base = guard.read_results(baseline)  # fail early, before a long run
    if current:
        rows = guard.read_results(current)
        with outliving_a_closed_stdout("the gate"):  # `| head`: its exit code, not click's silent 1 (a "regression")
            return perf_gate.gate(base, rows, tolerance, baseline, current,
                                  confirm=confirm and perf_gate.Confirm(settings, out_dir, name or Path(current).stem,
                                                                        note, True))
    cfg = perf_run.config(**settings, revision=revision)
    at_rev = perf_run.load_revision(cfg)  # an unknown revision, or a module that no longer loads: before --out is made
    if name is None:
        name = perf_run.utc_stamp() + f"-{cfg.device}" + ("-quick" if quick else "")
    written = Path(out_dir) / f"{name}.csv"
    if baseline and written.resolve() == Path(baseline).resolve():  # the gate would read its own results
        raise AttnbenchError(f"--compare {baseline}: the run would write its results over it ({written}); "
                             "give another --name or --out")
    perf_run.refuse_existing(out_dir, name, (".csv", ".png", ".md"), overwrite)
    if warning := perf_run.slow_dtype_warning(cfg.device, cfg.dtype):
        click.echo(warning, err=True)
    if base is not None:  # a baseline of another machine or thread count compares nothing: say so now
        import torch

        from attnbench.runner.environment import machine_name

        why = guard.incomparable(base, baseline, machine_name(cfg.device), cfg.threads or torch.get_num_threads())
        if why:
            raise AttnbenchError(f"--compare {baseline}: {why}; this run's timings could be compared with none "
                                 "of its rows")
    with outliving_a_closed_stdout("the benchmark"):  # `bench perf | head`: every length still runs and is written
        return _run_and_gate(cfg, out_dir, name, note, at_rev, revision, tolerance, baseline, base, confirm, settings)


def _run_and_gate(cfg, out_dir, name, note, at_rev, revision, tolerance, baseline, base, confirm, settings) -> int:
    from attnbench.benchmarks import guard

    csv = perf_run.execute(cfg, out_dir, name, note, at_rev)
    code, rows = 0, guard.read_results(csv)
    if revision:
        result = guard.side_by_side(rows.to_dict("records"), tolerance=tolerance)
        if result.compared == 0:  # nothing loaded from REV, or no core verified and timed on both sides
            click.echo(f"bench perf: no core or layer was timed beside {revision}'s; nothing compared", err=True)
            code = 1
        else:
            code = perf_gate.report(result, tolerance, f"{revision}'s code timed beside it", rerun=None)
        code = max(code, perf_gate.report_lost(result.lost, f"{revision}'s code"))
    if baseline:
        code = max(code, perf_gate.gate(base, rows, tolerance, baseline, str(csv),
                                        confirm=confirm and perf_gate.Confirm(settings, out_dir, name, note, False)))
    return code


@cli.command("ceiling")
@click.option("--lengths", default="1024,2048,4096", show_default=True, help="Comma-separated n.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch threads [default: torch's].")
@click.option("--repeat", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Interleaved rounds per length.")
@click.option("--min-run-time", type=NumberRange(0, 60, min_open=True), default=0.2, show_default=True,
              help="Seconds per blocked_autorange.")
@click.option("--out", "out_dir", type=NonEmptyPath("name a folder, e.g. --out results/benchmarks", file_okay=False),
              default="results/benchmarks", show_default=True)
@click.option("--name", default=None, help="File name stem [default: UTC time, e.g. 20260101T120000Z-cpu-ceiling].")
@click.option("--overwrite", is_flag=True, help="Replace OUT/NAME.csv and .md where they exist (else refused).")
def ceiling_command(lengths, threads, repeat, min_run_time, out_dir, name, overwrite) -> None:
    """Time attention's GEMM shapes, attention built from its block GEMMs and SDPA against a square
    matmul in the same rounds (B=1, H=8, d_head=64, fp32, CPU): what stands between SDPA and issue
    8's 75 %-of-matmul target. Writes OUT/NAME.csv and OUT/NAME.md.

    \b
    Example:
      bench ceiling --threads 2
    """
    from attnbench.benchmarks.ceiling import run_ceiling, write_ceiling

    lengths = perf_run.parse_ints(lengths, "--lengths")
    perf_run.check_tokens(f"--lengths {max(lengths)}", max(lengths), inputs=3)  # q, k, v: (1, 8, n, 64) each
    name = perf_run.stem(name) if name is not None else perf_run.utc_stamp() + "-cpu-ceiling"
    perf_run.refuse_existing(out_dir, name, (".csv", ".md"), overwrite)
    out = perf_run.writable(out_dir)
    with outliving_a_closed_stdout("the benchmark"):  # `| head`: every length still timed and written
        rows = run_ceiling(lengths, threads=threads, repeat=repeat, min_run_time=min_run_time,
                           log=lambda line: console.print(line, highlight=False))
        try:
            paths = write_ceiling(rows, out, name)
        except OSError as exc:
            raise StoppedWriting(f"cannot write the results to {out}: {exc.strerror or exc}") from None
        for path in paths.values():
            console.print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """`python -m attnbench.benchmarks [OPTIONS]`: the same as `bench perf [OPTIONS]`."""
    from attnbench.cli import main as bench_main

    bench_main(["perf", *(sys.argv[1:] if argv is None else argv)])
