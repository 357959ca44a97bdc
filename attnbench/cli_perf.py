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
              help="Baseline CSV: exit 1 when a time is > --tolerance slower on the same machine kind, --threads and --heap, "
                   "or when no row could be compared.")
@click.option("--current", type=click.Path(dir_okay=False), default=None,
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
                     confirm=confirm and _Confirm(settings, out_dir, name or Path(current).stem, note, True))
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
                               confirm=confirm and _Confirm(settings, out_dir, name, note, False)))
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
        return replace(confirm, peak=_peak(current)).run(result.regressions, tolerance)
    return _report(result, tolerance, baseline, rerun="On a shared machine, time them again beside the baseline's "
                   f"code before believing it: bench perf --compare {baseline} --current {current_name} --confirm")


@dataclass(frozen=True)
class _Confirm:
    """`--confirm`: the flagged rows against a baseline, timed again beside the baseline's own code.

    A timing that drifted with the machine (other tenants, the hour, the state of a long run's
    process) is no slower beside the old code in the same rounds; a regression of the variant's
    code is. So each flagged core or layer row is timed beside the same row of the revision its
    baseline row records (`--against` that git_sha: one run per batch of the flagged (case, n)
    cells only, under the row's device, dtype, threads and heap), and fails where that ratio exceeds
    the tolerance. `--against` swaps only the variant's own module, so a flag stands (fails)
    wherever that ratio could not see the cause: code of the variants package the module uses
    changed since the baseline's revision, another torch, no revision recorded or a `-dirty` one,
    one this checkout lacks, a row not timed beside it; and, checking a CSV written before
    (`--current`), one timed on another machine or on code other than the working tree's. SDPA,
    the peers and the naive references are not a variant's kernels: listed, not failed.
    """

    settings: dict  # perf_command's run options, for `_config`
    out_dir: str
    stem: str  # the checked run's name: the confirming runs are STEM-confirm-<hash>-b<batch>
    note: str
    checked_elsewhere: bool  # the rows come from a CSV (--current), not from a run of this tree just now
    peak: float | None = None  # the checked run's matmul peak: a confirming run far below it ran on a busy machine

    def run(self, regressions, tolerance: float) -> int:
        from attnbench.benchmarks import guard
        from attnbench.benchmarks.cases import CASES

        variant_of = {case.label: case.variant for case in CASES}
        others = [r for r in regressions if guard.not_ours(r)]
        if others:
            click.echo(f"not failed: {len(others)} flagged timings of SDPA, naive references or peers, not a variant's "
                       "kernel (--against does not swap their code):")
            for reg in others:
                click.echo(f"  {reg}")
        mine = [r for r in regressions if r not in others]
        stand: list[tuple] = []  # (regression, why it cannot be timed beside the baseline's code)
        groups: dict[tuple, list] = {}  # one run each: its own revision, condition and batch
        for reg in mine:
            why = self._why_not(reg, variant_of.get(reg.case))
            if why:
                stand.append((reg, why))
            else:
                key = (reg.baseline_revision, reg.device, reg.dtype, reg.threads, reg.heap, reg.batch)
                groups.setdefault(key, []).append(reg)
        confirmed, names = 0, set()
        for key, regs in groups.items():
            confirmed += self._confirm_group(*key, regs, variant_of, tolerance, names, stand)
        for reg, why in stand:
            click.echo(f"  {reg}; stands: {why}")
        if not mine:
            click.echo("no flagged core or layer timing: no variant regressed")
            return 0
        click.echo(f"{confirmed + len(stand)} of {len(mine)} flagged core and layer timings fail the gate: {confirmed} "
                   f"confirmed beside the baseline's code, {len(stand)} not timed beside it (stand)")
        return 1 if confirmed or stand else 0

    def _why_not(self, reg, variant: str | None) -> str | None:
        """Why `reg` cannot be timed beside its baseline's code, from its rows and this checkout."""
        import torch

        from attnbench.benchmarks import guard
        from attnbench.benchmarks.revision import changed_since, module_files
        from attnbench.runner.environment import cpu_model

        if reg.impl not in guard.VARIANT_IMPLS or not variant:
            return f"{reg.case} {reg.impl} is not the core or layer of a case this checkout benchmarks"
        why = guard.unconfirmable(reg, torch.__version__)
        if why or not self.checked_elsewhere:
            return why
        cuda = reg.device.startswith("cuda") and torch.cuda.is_available()
        here = torch.cuda.get_device_name(torch.device(reg.device)) if cuda else cpu_model()
        if reg.machine != here:
            return f"the run checked was timed on {reg.machine}, and this is {here}"
        if reg.torch != torch.__version__:
            return f"the run checked was timed with torch {reg.torch or '(not recorded)'}, and this is {torch.__version__}"
        if not reg.revision or reg.revision.endswith("-dirty"):
            return (f"the run checked was timed on {reg.revision or 'no recorded revision'}: nothing says its kernels "
                    "are the working tree's")
        try:
            changed = changed_since(reg.revision) & module_files(variant, reg.revision)[1]
        except AttnbenchError as exc:
            return str(exc)
        if changed:
            return (f"{', '.join(sorted(changed))} here differ from {reg.revision[:7]}, where the run checked was "
                    "timed: timing the working tree again would not time its code")
        return None

    def _confirm_group(self, revision, device, dtype, threads, heap, batch, regs, variant_of, tolerance,
                       names: set[str], stand: list) -> int:
        """Time `regs` (of one batch) beside `revision`'s code, in a run named STEM-confirm-<hash>-b<batch>
        (not one of `names`, the runs before it); how many that confirms. Rows it cannot time beside
        that code join `stand`, with why."""
        from attnbench.benchmarks import guard
        from attnbench.benchmarks.revision import changed_since, module_files
        from attnbench.benchmarks.suite import range_text, round_range

        try:
            changed = changed_since(revision)
        except AttnbenchError as exc:
            stand.extend((reg, str(exc)) for reg in regs)
            return 0
        timed = []
        for reg in regs:  # code the module shares, from the working tree on both sides: its change would not show
            own, uses = module_files(variant_of[reg.case], revision)
            shared = sorted((changed & uses) - {own})
            if shared:
                stand.append((reg, f"{', '.join(shared)} changed since {revision[:7]}; timed beside {revision[:7]}'s "
                                   f"{own} alone, that change would not show"))
            else:
                timed.append(reg)
        lengths = sorted({r.n for r in timed})
        settings = {**self.settings, "variants": ",".join(sorted({variant_of[r.case] for r in timed})),
                    "lengths": ",".join(map(str, lengths)), "batches": str(batch),
                    "batched_max_n": max(lengths, default=1), "device": device, "threads": threads,
                    "heap": heap if heap in HEAPS else CACHED,  # CUDA rows record CUDA's allocator
                    "dtype": _DTYPE_OPTION.get(dtype, "auto"), "quick": False}
        try:  # only the flagged cases, no memory probe
            cfg = replace(_config(**settings, revision=revision), cases=tuple(sorted({r.case for r in timed})),
                          memory_probes=())
            at_rev = _revision(cfg) if timed else None
        except AttnbenchError as exc:
            stand.extend((reg, str(exc)) for reg in timed)
            return 0
        if at_rev is not None:
            short = at_rev[0]
            loaded = [r for r in timed if variant_of[r.case] in at_rev[1]]
            stand.extend((r, f"its code is not loaded from {short} (the line above says why)") for r in timed
                         if r not in loaded)
            timed = loaded
        if not timed:
            return 0
        # the flagged cells only: a case flagged at one length is not timed at another's
        cells = tuple(sorted({(r.case, r.n) for r in timed}))
        cfg = replace(cfg, cases=tuple(sorted({r.case for r in timed})), cells=cells)
        name = f"{self.stem}-confirm-{short}-b{batch}"
        name = next(n for n in (name, *(f"{name}-{i}" for i in range(2, len(names) + 3))) if n not in names)
        names.add(name)
        where = "; ".join(f"{case} at n = {', '.join(str(n) for c, n in cells if c == case)}" for case in cfg.cases)
        click.echo(f"timing {len(timed)} flagged rows again beside {short}'s code, the baseline's revision "
                   f"({where}; batch {batch}):")
        csv = _execute(cfg, self.out_dir, name, self.note, at_rev)
        frame = guard.read_results(csv)
        peak = _peak(frame)
        if peak and self.peak and peak < BUSY * self.peak:
            click.echo(f"  the machine is busy: its matmul peak was {peak / 1e9:.0f} GFLOP/s in this run, "
                       f"{self.peak / 1e9:.0f} in the run checked; the ratios below are noisy (their rounds in brackets)")
        rows = [r for r in frame.to_dict("records") if (r["device"], r["dtype"]) == (device, dtype)]
        by_key = {(r["case"], r["impl"], r["batch"], r["n"]): r for r in rows}
        confirmed = 0
        for reg, ratio, bad in guard.confirmations(tuple(timed), rows, short, tolerance=tolerance):
            if ratio is None:
                stand.append((reg, f"not timed beside {short}'s {reg.impl} (see {csv.name})"))
                continue
            pair = by_key[(reg.case, reg.impl, reg.batch, reg.n)], by_key[(reg.case, f"{reg.impl}@{short}", reg.batch, reg.n)]
            verdict = "slower beside it too: confirmed" if bad else "not reproduced beside it"
            click.echo(f"  {reg}; {ratio:.2f}×{range_text(*round_range(*pair))} beside {short}'s {reg.impl}: {verdict}")
            confirmed += bad
        return confirmed


_DTYPE_OPTION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # a CSV's dtype → --dtype
BUSY = 0.8  # a confirming run whose matmul peak is below this fraction of the checked run's says so


def _peak(frame) -> float | None:
    """The median matmul peak (FLOP/s) a results frame recorded, None without one."""
    import pandas as pd

    if "matmul_peak_flops" not in frame.columns:
        return None
    peaks = pd.to_numeric(frame["matmul_peak_flops"], errors="coerce").dropna()  # text there: no peak
    return float(peaks.median()) if len(peaks) else None


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
