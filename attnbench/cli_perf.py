"""`bench perf` (also `python -m attnbench.benchmarks`) and `bench ceiling`: the performance benchmarks of
`attnbench.benchmarks`."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import dataclass, replace
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
              help="A git revision: time each variant's core and layer as its own module was at that revision (shared "
                   "code comes from the working tree) beside the working tree's, in the same rounds (impls core@REV, "
                   "layer@REV); "
                   "exit 1 when the working tree's is > --tolerance slower, or nothing could be compared.")
@click.option("--confirm", is_flag=True,
              help="With --compare: time each flagged variant again beside the baseline's own code (--against "
                   "the git revision its rows record), in the same rounds, and exit 1 only for what that confirms. "
                   "Flagged SDPA, peer and naive rows, whose code --against does not swap, are listed, not failed.")
@click.option("--tolerance", type=NumberRange(min=0), default=0.10, show_default=True,
              help="The slowdown --compare and --against allow (0.10: 10 %).")
@click.option("--note", default="", help="A line added to the markdown summary (e.g. machine load).")
def perf_command(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
                 device, dtype, threads, heap, quick, out_dir, name, baseline, current, revision, confirm, tolerance,
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
      bench perf --compare results/benchmarks/BASELINE.csv --confirm   # flags timed again beside the old code
      bench perf --variants linear --against HEAD~1   # old and new kernel side by side
    """
    from attnbench.benchmarks import guard

    if current and not baseline:
        raise AttnbenchError("--current needs --compare BASELINE.csv")
    if confirm and not baseline:
        raise AttnbenchError("--confirm needs --compare BASELINE.csv")
    if confirm and revision:
        raise AttnbenchError("--confirm times flagged rows beside the baseline's revision: it cannot go with --against")
    if current and revision:
        raise AttnbenchError("--against times a revision beside the working tree: it cannot check --current")
    settings = dict(variants=variants, lengths=lengths, batches=batches, batched_max_n=batched_max_n, repeat=repeat,
                    min_run_time=min_run_time, max_cell_s=max_cell_s, naive_limit_gib=naive_limit_gib, device=device,
                    dtype=dtype, threads=threads, heap=heap, quick=quick)
    if name is not None:
        _stem(name)
    if baseline:
        base = guard.read_results(baseline)  # fail early, before a long run
    if current:
        rows = guard.read_results(current)
        return _gate(base, rows, tolerance, baseline, current,
                     confirm=confirm and _Confirm(settings, out_dir, Path(current).stem, note))
    cfg = _config(**settings, revision=revision)
    at_rev = _revision(cfg)  # an unknown revision, or a module that no longer loads, fails before --out is created
    if name is None:
        name = _utc_stamp() + f"-{cfg.device}" + ("-quick" if quick else "")
    csv = _execute(cfg, out_dir, name, note, at_rev)
    code, rows = 0, guard.read_results(csv)
    if revision:
        result = guard.side_by_side(rows.to_dict("records"), tolerance=tolerance)
        if result.compared == 0:  # nothing loaded from REV, or no core verified and timed on both sides
            click.echo(f"bench perf: no core or layer was timed beside {revision}'s; nothing compared", err=True)
            code = 1
        else:
            code = _report(result, tolerance, f"{revision}'s code timed beside it", rerun=None)
    if baseline:
        code = max(code, _gate(base, rows, tolerance, baseline, str(csv),
                               confirm=confirm and _Confirm(settings, out_dir, name, note)))
    return code


def _config(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
            device, dtype, threads, heap, quick, revision=None):
    """The run the options describe, checked (one line and exit 2 on bad input) before anything runs."""
    from attnbench.benchmarks.cases import CASES
    from attnbench.benchmarks.suite import FULL_LENGTHS, QUICK_LENGTHS, PerfConfig
    from attnbench.runner.execute import DTYPES

    chosen = _variants(variants, sorted({c.variant for c in CASES if c.variant}))
    lengths = _ints(lengths, "--lengths") if lengths is not None else (QUICK_LENGTHS if quick else FULL_LENGTHS)
    batches = _ints(batches, "--batch") if batches is not None else ((1,) if quick else (1, 4))
    _check_sizes(lengths, batches, batched_max_n)
    return PerfConfig(
        variants=tuple(chosen),
        lengths=lengths,
        batches=batches,
        batched_max_n=batched_max_n,
        repeat=repeat if repeat is not None else (1 if quick else 3),
        min_run_time=min_run_time if min_run_time is not None else (0.05 if quick else 0.2),
        max_cell_s=max_cell_s,
        naive_limit_gib=naive_limit_gib,
        memory_probes=() if quick else PerfConfig.memory_probes,
        device=resolve_device(device),
        dtype=None if dtype == "auto" else DTYPES[dtype],
        threads=threads,
        heap=heap,
        against=revision,
    )


def _revision(cfg):
    """`revision_classes` of the variants `cfg` times, when it has --against: loaded now, so an
    unknown revision or a module that no longer loads is one line before --out is created."""
    if not cfg.against:
        return None
    from attnbench.benchmarks.cases import select_cases
    from attnbench.benchmarks.revision import revision_classes

    variants = sorted({c.variant for c in select_cases(list(cfg.variants), cfg.cases) if c.variant})
    return revision_classes(cfg.against, variants, lambda line: console.print(line, highlight=False))


def _execute(cfg, out_dir: str, name: str, note: str, at_rev=None) -> Path:
    """Run `cfg`, writing OUT/NAME.csv after each length (a killed run keeps what it measured),
    then the page and the plot; the CSV's path."""
    from attnbench.benchmarks.outputs import write_all, write_csv
    from attnbench.benchmarks.suite import run_suite

    out = _writable(out_dir)
    partial = out / f"{name}.csv"

    def save(rows: list[dict]) -> None:
        try:
            write_csv(rows, partial)
        except OSError as exc:  # e.g. the disk filled up: stop, keeping the last CSV written
            raise StoppedWriting(f"cannot write {partial}: {exc.strerror or exc}") from None

    rows = run_suite(cfg, log=lambda line: console.print(line, highlight=False), save=save, at_rev=at_rev)
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


def _gate(base, current, tolerance, baseline, current_name, confirm: _Confirm | bool = False) -> int:
    """The regression gate against `baseline`: 1 on a regression, and when nothing was compared
    (else a gate on another machine, thread count or heap would pass every regression). With
    `confirm`, the flagged rows are timed again beside the baseline's code first (`_Confirm`)."""
    from attnbench.benchmarks import guard

    result = guard.compare(base, current, tolerance=tolerance)
    if result.compared == 0:
        why = guard.why_nothing_compared(base, current, baseline, current_name)
        click.echo(f"bench perf: nothing compared: {why}", err=True)
        return 1
    if confirm and result.regressions:
        _report(result, tolerance, baseline, rerun=None)
        return confirm.run(result.regressions, tolerance)
    return _report(result, tolerance, baseline, rerun="On a shared machine, time them again beside the baseline's "
                   f"code before believing it: bench perf --compare {baseline} --current {current_name} --confirm")


@dataclass(frozen=True)
class _Confirm:
    """`--confirm`: the flagged rows against a baseline, timed again beside the baseline's own code.

    A timing that drifted with the machine (other tenants, the hour) is as slow beside the old
    code as beside the baseline; a regression is slower than the old code in the same rounds. So
    each flagged core or layer row is timed beside the same row of the revision the baseline
    recorded (`--against` its git_sha, one run of the flagged variants, lengths and batches under
    the row's device, dtype, threads and heap), and fails only where that ratio exceeds the
    tolerance, or where it cannot be taken (no revision recorded, uncommitted changes, a revision
    this checkout lacks): then the flag stands. SDPA, the peers and the naive references are not
    a variant's kernels, and `--against` does not swap their code: listed, not failed.
    """

    settings: dict  # perf_command's run options, for `_config`
    out_dir: str
    stem: str  # the checked run's name: the confirming runs are STEM-confirm-<hash>
    note: str

    def run(self, regressions, tolerance: float) -> int:
        from attnbench.benchmarks import guard
        from attnbench.benchmarks.cases import CASES

        variant_of = {case.label: case.variant for case in CASES}
        mine = [r for r in regressions if r.impl in guard.VARIANT_IMPLS and variant_of.get(r.case)]
        others = [r for r in regressions if r not in mine]
        if others:
            click.echo(f"not failed: {len(others)} flagged timings of SDPA, peers or naive references, whose code "
                       "--against does not swap (their slowdown is the machine's, or torch's):")
            for reg in others:
                click.echo(f"  {reg}")
        groups: dict[tuple, list] = {}  # one run each: its own revision, condition and batch
        for reg in mine:
            key = (reg.baseline_revision, reg.device, reg.dtype, reg.threads, reg.heap, reg.batch)
            groups.setdefault(key, []).append(reg)
        confirmed = stand = 0
        names: set[str] = set()
        for (revision, device, dtype, threads, heap, batch), regs in groups.items():
            counts = self._confirm_group(revision, device, dtype, threads, heap, batch, regs, variant_of, tolerance,
                                         names)
            confirmed, stand = confirmed + counts[0], stand + counts[1]
        if not mine:
            click.echo("no flagged core or layer timing: no variant regressed")
            return 0
        click.echo(f"{confirmed + stand} of {len(mine)} flagged core and layer timings fail the gate: {confirmed} "
                   f"confirmed beside the baseline's code, {stand} not timed beside it")
        return 1 if confirmed + stand else 0

    def _confirm_group(self, revision, device, dtype, threads, heap, batch, regs, variant_of, tolerance,
                       names: set[str]) -> tuple[int, int]:
        """Time `regs` (of one batch) beside `revision`'s code, in a run named STEM-confirm-<hash>-b<batch>
        (not one of `names`, the runs before it): (how many that confirms, how many were not timed and stand)."""
        from attnbench.benchmarks import guard

        why = guard.unconfirmable(revision)
        cfg = None
        if why is None:
            lengths = sorted({r.n for r in regs})
            settings = {**self.settings, "variants": ",".join(sorted({variant_of[r.case] for r in regs})),
                        "lengths": ",".join(map(str, lengths)), "batches": str(batch),
                        "batched_max_n": max(lengths), "device": device, "threads": threads,
                        "heap": heap if heap in HEAPS else CACHED,  # CUDA rows record CUDA's allocator
                        "dtype": _DTYPE_OPTION.get(dtype, "auto"), "quick": False}
            try:  # only the flagged cases, no memory probe
                cfg = replace(_config(**settings, revision=revision), cases=tuple(sorted({r.case for r in regs})),
                              memory_probes=())
                at_rev = _revision(cfg)
            except AttnbenchError as exc:
                why = str(exc)
        if why is not None:
            click.echo(f"cannot confirm {len(regs)} flagged timings ({why}); they stand:")
            for reg in regs:
                click.echo(f"  {reg}")
            return 0, len(regs)
        short = at_rev[0]
        name = f"{self.stem}-confirm-{short}-b{batch}"
        name = next(n for n in (name, *(f"{name}-{i}" for i in range(2, len(names) + 3))) if n not in names)
        names.add(name)
        click.echo(f"timing {len(regs)} flagged rows again beside {short}'s code, the baseline's revision "
                   f"({'; '.join(cfg.cases)}; n = {settings['lengths']}; batch {batch}):")
        csv = _execute(cfg, self.out_dir, name, self.note, at_rev)
        rows = guard.read_results(csv).to_dict("records")
        confirmed = stand = 0
        for reg, ratio, bad in guard.confirmations(tuple(regs), rows, short, tolerance=tolerance):
            if ratio is None:
                click.echo(f"  {reg}; not timed beside {short}'s (see {csv.name}): it stands")
                stand += 1
            else:
                verdict = "confirmed" if bad else "not confirmed: the machine's drift"
                click.echo(f"  {reg}; {ratio:.2f}× beside {short}'s {reg.impl}: {verdict}")
                confirmed += bad
        return confirmed, stand


_DTYPE_OPTION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # a CSV's dtype → --dtype


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


def main(argv: list[str] | None = None) -> None:
    """`python -m attnbench.benchmarks [OPTIONS]`: the same as `bench perf [OPTIONS]`."""
    from attnbench.cli import main as bench_main

    bench_main(["perf", *(sys.argv[1:] if argv is None else argv)])
