"""One `bench perf` run: its options checked into a `PerfConfig` (one line and exit 2 on bad input,
before anything runs), the revision `--against` times loaded, and the run executed into OUT/NAME.*.
Shared by the commands (attnbench/cli_perf.py) and `--confirm`'s runs (attnbench/perf_gate.py)."""

from __future__ import annotations

import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from attnbench.errors import AttnbenchError, StoppedWriting
from attnbench.limits import MAX_TOKENS

DTYPE_NAMES = ("auto", "fp32", "bf16", "fp16")


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """`--lengths` and `--batch`: comma-separated positive integers, at least one; each once, in the
    order first given (a repeat would be timed twice and tabulated once)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise AttnbenchError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise AttnbenchError(f"{what}: empty list")
    if any(v < 1 for v in values):
        raise AttnbenchError(f"{what}: expected positive integers, got {text!r}")
    return tuple(dict.fromkeys(values))


def config(variants, lengths, batches, batched_max_n, repeat, min_run_time, max_cell_s, naive_limit_gib,
           device, dtype, threads, heap, quick, revision=None):
    """The run the options describe, checked (one line and exit 2 on bad input) before anything runs."""
    from attnbench.benchmarks.cases import CASES
    from attnbench.benchmarks.suite import FULL_LENGTHS, QUICK_LENGTHS, PerfConfig
    from attnbench.cli import resolve_device  # here: attnbench.cli imports this module's commands
    from attnbench.runner.execute import DTYPES

    chosen = _variants(variants, sorted({c.variant for c in CASES if c.variant}))
    # in increasing order, once each: a length dropped as too slow or out of memory drops the
    # longer ones, never a shorter one given later
    lengths = tuple(sorted(set(parse_ints(lengths, "--lengths")))) if lengths is not None else (
        QUICK_LENGTHS if quick else FULL_LENGTHS)
    if batches is not None:
        batches = tuple(sorted(set(parse_ints(batches, "--batch"))))
    else:  # the default batch > 1 where some length is short enough for it (--batched-max-n)
        batches = (1,) if quick else (1, *[4] * any(n <= batched_max_n for n in lengths))
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


def load_revision(cfg):
    """`revision_classes` of the variants `cfg` times, when it has --against: loaded now, so an
    unknown revision or a module that no longer loads is one line before --out is created."""
    if not cfg.against:
        return None
    from attnbench.benchmarks.cases import select_cases
    from attnbench.benchmarks.revision import revision_classes
    from attnbench.cli import console

    variants = sorted({c.variant for c in select_cases(list(cfg.variants), cfg.cases) if c.variant})
    at_rev = revision_classes(cfg.against, variants, lambda line: console.print(line, highlight=False))
    if not at_rev[1]:  # the run would time everything, then fail for want of a pair
        raise AttnbenchError(f"--against {cfg.against}: none of {', '.join(variants)} can be timed at that revision "
                             "(above); nothing would be compared")
    return at_rev


def execute(cfg, out_dir: str, name: str, note: str, at_rev=None) -> Path:
    """Run `cfg`, writing OUT/NAME.csv after each length (a killed run keeps what it measured),
    then the page and the plot; the CSV's path."""
    from attnbench.benchmarks.outputs import write_all, write_csv
    from attnbench.benchmarks.suite import run_suite
    from attnbench.cli import console
    from attnbench.errors import Terminated

    out = writable(out_dir)
    partial = out / f"{name}.csv"
    saved: list[list[dict]] = []

    def save(rows: list[dict]) -> None:
        try:
            write_csv(rows, partial)
        except OSError as exc:  # e.g. the disk filled up: stop, keeping the last CSV written
            raise StoppedWriting(f"cannot write {partial}: {exc.strerror or exc}") from None
        saved[:] = [[dict(r) for r in rows]]  # as written: run_suite goes on appending to `rows`

    try:
        rows = run_suite(cfg, log=lambda line: console.print(line, highlight=False), save=save, at_rev=at_rev)
        try:
            paths = write_all(rows, out, name, note=note)
        except OSError as exc:
            raise StoppedWriting(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    except (KeyboardInterrupt, Terminated):  # Ctrl-C or kill, even while the page is written: it is written
        _write_interrupted(saved[0] if saved else [], out, name, note)
        raise
    for path in paths.values():
        console.print(f"wrote {path}")
    return paths["csv"]


def _write_interrupted(rows: list[dict], out: Path, name: str, note: str) -> None:
    """After Ctrl-C or a kill: the page and plot of the rows the CSV kept (the lengths finished),
    and where they are, on stderr; or that nothing was finished."""
    import click

    from attnbench.benchmarks.outputs import write_all
    from attnbench.benchmarks.suite import add_ratios

    if not rows:
        click.echo("interrupted before the first length was finished: nothing written", err=True)
        return
    lengths = sorted({int(r["n"]) for r in rows})
    add_ratios(rows)  # as the end of a run adds them: ÷SDPA, ÷peer and the scaling ratio where its lengths ran
    marked = (note + " " if note else "") + (f"Interrupted: only the lengths finished before it "
                                             f"({', '.join(map(str, lengths))}) are here.")
    try:
        paths = write_all(rows, out, name, note=marked)
    except Exception as exc:  # noqa: BLE001 -- the CSV stands; say why its page does not
        click.echo(f"interrupted: {len(rows)} rows (n = {', '.join(map(str, lengths))}) kept in {out / name}.csv; "
                   f"its page was not written ({type(exc).__name__}: {exc})", err=True)
        return
    click.echo(f"interrupted: {len(rows)} rows (n = {', '.join(map(str, lengths))}) kept in "
               f"{', '.join(str(p) for p in paths.values())}", err=True)


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
    base = name.split("(", 1)[0].strip()
    if "(" in name and base in VARIANTS and VARIANTS.resolve(base) in known:  # options: its cases are fixed
        from attnbench.benchmarks.cases import CASES

        cases = [c.label for c in CASES if c.variant == VARIANTS.resolve(base)]
        raise AttnbenchError(f"--variants: bench perf takes names, not options ({name!r}): it times "
                             f"{VARIANTS.resolve(base)} as {', '.join(cases)}; time other options with "
                             f"bench run --kinds efficiency --variants {name!r}")
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
        timed = [n for n in lengths if batch == 1 or n <= batched_max_n]
        if not timed:  # it would time nothing at that batch, after minutes of the others
            raise AttnbenchError(f"--batch {batch}: no --lengths is at most --batched-max-n {batched_max_n}, so nothing "
                                 f"would be timed at batch {batch}; give a length up to {batched_max_n} or raise "
                                 "--batched-max-n")
        n = max([calibration] + timed)
        check_tokens(f"--batch {batch} × --lengths {n}", batch * n, inputs=4)  # q, k, v and x


def check_tokens(what: str, tokens: int, inputs: int) -> None:
    """Refuse one call of more than MAX_TOKENS tokens, or whose `inputs` (tokens, d_model) fp32
    tensors, twice over (outputs and gradients as large), would not fit in this machine's memory:
    one line now, not an allocator's traceback or the kernel's out-of-memory kill (rc 137) later."""
    from attnbench.benchmarks.cases import D_MODEL

    gib = inputs * tokens * D_MODEL * 4 / 2**30
    if tokens > MAX_TOKENS:
        raise AttnbenchError(f"{what}: {tokens} tokens in one call, more than {MAX_TOKENS} "
                             f"(its inputs alone would take {gib:.3g} GiB in fp32)")
    memory = physical_memory()
    if memory is not None and 2 * gib * 2**30 > memory:
        raise AttnbenchError(f"{what}: {tokens} tokens in one call: its inputs alone would take {gib:.3g} GiB in fp32, "
                             f"and with their outputs and gradients more than this machine's {memory / 2**30:.3g} GiB")


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def stem(name: str) -> str:
    """`--name`: a file name stem; given empty it is refused, not replaced by the default."""
    if "/" in name or os.sep in name or name in ("", ".", ".."):
        raise AttnbenchError(f"--name {name!r}: a file name stem, without '/'")
    return name


def utc_stamp() -> str:
    """The default file name's start: the UTC time to the second, e.g. 20260101T120000Z."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def writable(out_dir: str) -> Path:
    """`--out`, created and checked for writing now, not after minutes of timing."""
    from attnbench.runner.store import why_not_writable

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise AttnbenchError(f"--out {out}: {why_not_writable(out, exc)}") from None
    return out


def refuse_existing(out_dir: str, name: str, suffixes: tuple[str, ...], overwrite: bool) -> None:
    """Refuse, before anything is timed, a run whose OUT/NAME.<suffix> files exist (an earlier
    run's results, replaced without a word), unless `overwrite` (`--overwrite`)."""
    if overwrite:
        return
    there = [Path(out_dir) / f"{name}{suffix}" for suffix in suffixes]
    there = [path for path in there if path.exists()]
    if there:
        raise AttnbenchError(f"{there[0]} already exists; give another --name or --out, or --overwrite to replace "
                             f"{'it' if len(there) == 1 else 'them'} ({', '.join(p.name for p in there)})")


def slow_dtype_warning(device: str, dtype) -> str | None:
    """A warning where `dtype` matmuls on this CPU run far slower than fp32 (fp16 without native
    support is emulated: 37x slower here), so the timings measure torch's fallback; else None."""
    import time

    import torch

    if device != "cpu" or dtype not in (torch.float16, torch.bfloat16):
        return None
    inputs = {of: (torch.randn(8, 256, 64, dtype=of), torch.randn(8, 64, 256, dtype=of)) for of in (dtype, torch.float32)}
    best = dict.fromkeys(inputs, math.inf)
    for round_ in range(6):  # interleaved, so load on the machine slows both alike; the first round warms up
        for of, (a, b) in inputs.items():
            start = time.perf_counter()
            torch.bmm(a, b)
            if round_:
                best[of] = min(best[of], time.perf_counter() - start)
    slower = best[dtype] / max(best[torch.float32], 1e-9)
    if slower < 4:
        return None
    name = "fp16" if dtype == torch.float16 else "bf16"
    return (f"warning: --dtype {name} on this CPU: one {name} matmul takes {slower:.0f}x the time of an fp32 one "
            "(no native support: torch emulates it), so these timings measure torch's fallback, not the kernels")
