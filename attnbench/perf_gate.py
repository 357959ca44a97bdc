"""`bench perf --compare` and `--confirm`: the regression gate's outcome in words and exit codes,
and the confirming runs that time each flagged row again beside its baseline's code (the
comparisons themselves are benchmarks/guard.py's)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import click

from attnbench import perf_run
from attnbench.errors import AttnbenchError
from attnbench.runner.heap import CACHED, HEAPS


def gate(base, current, tolerance, baseline, current_name, confirm: Confirm | bool = False) -> int:
    """The regression gate against `baseline`: 1 on a regression of a variant's core or layer, when
    nothing was compared (else a gate on another machine, thread count or heap would pass every
    regression), and when a core or layer row the baseline timed was not timed (`guard.lost`).
    SDPA, naive references and peers that slowed are listed, not failed: they are the yardsticks,
    not a variant's code. A torch version that differs is said. With `confirm`, the flagged rows
    are timed again beside the baseline's code first (`Confirm`)."""
    from attnbench.benchmarks import guard

    result = guard.compare(base, current, tolerance=tolerance)
    if result.compared == 0:
        why = guard.why_nothing_compared(base, current, baseline, current_name)
        click.echo(f"bench perf: nothing compared: {why}", err=True)
        return 1
    if torches := guard.torch_versions(base, current):
        click.echo(f"note: the baseline was timed with torch {torches[0]} and this with {torches[1]}: a change "
                   "in speed may be torch's")
    others = tuple(r for r in result.regressions if guard.not_ours(r))
    if others:  # the yardsticks slowed: the machine or torch, not a variant's code
        click.echo(f"not failed: {len(others)} timings of SDPA, naive references or peers slower by more than "
                   f"{tolerance:.0%}, not a variant's kernel (the machine's or torch's speed?):")
        for reg in others:
            click.echo(f"  {reg}")
        result = replace(result, regressions=tuple(r for r in result.regressions if r not in others))
    if confirm and result.regressions:
        report(result, tolerance, baseline, rerun=None)
        code = replace(confirm, peak=_peak(current)).run(result.regressions, tolerance)
    else:
        code = report(result, tolerance, baseline, rerun="On a shared machine, time them again beside the baseline's "
                      f"code before believing it: bench perf --compare {baseline} --current {current_name} --confirm")
    report_uncompared(result.uncompared, baseline)
    return max(code, report_lost(result.lost, baseline))


def report_uncompared(uncompared: tuple[int, int], against: str) -> None:
    """Say how many of `against`'s timed rows were not compared (`guard.Comparison.uncompared`), so
    a passing gate is read as what it checked, not as the whole baseline."""
    here, elsewhere = uncompared
    if not here + elsewhere:
        return
    parts = [f"{here} under this run's machine, threads and heap but matching none of its timed rows (another case, "
             "length, batch, dtype or device, or untimed there)"] * bool(here)
    parts += [f"{elsewhere} timed on another machine, thread count or heap"] * bool(elsewhere)
    click.echo(f"not compared: {here + elsewhere} timed rows of {against}: {'; '.join(parts)}")


def report_lost(lost, against: str) -> int:
    """Print the variants' rows `against` timed and the run did not (`guard.Lost`); 1 if any: no
    timing to confirm, a broken or vanished kernel fails the gate."""
    if not lost:
        return 0
    click.echo(f"{len(lost)} core or layer timings of {against} were not timed in this run:")
    for row in lost:
        click.echo(f"  {row}")
    return 1


@dataclass(frozen=True)
class Confirm:
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
    the peers and the naive references are not a variant's kernels: `gate` lists them, not failed,
    with or without `--confirm`.
    """

    settings: dict  # perf_command's run options, for `_config`
    out_dir: str
    stem: str  # the checked run's name: the confirming runs are STEM-confirm-<hash>-b<batch>
    note: str
    checked_elsewhere: bool  # the rows come from a CSV (--current), not from a run of this tree just now
    peak: float | None = None  # the checked run's matmul peak: a confirming run far below it ran on a busy machine

    def run(self, regressions, tolerance: float) -> int:
        from attnbench.benchmarks import revision
        from attnbench.benchmarks.cases import CASES

        variant_of = {case.label: case.variant for case in CASES}
        # what git says of a revision, asked once per run: every flagged row of a run asks the same
        git = _Git(functools.cache(revision.changed_since), functools.cache(revision.module_files))
        mine = list(regressions)  # a variant's core and layer rows: `gate` listed the others, not failed
        stand: list[tuple] = []  # (regression, why it cannot be timed beside the baseline's code)
        groups: dict[tuple, list] = {}  # one run each: its own revision, condition and batch
        for reg in mine:
            why = self._why_not(reg, variant_of.get(reg.case), git)
            if why:
                stand.append((reg, why))
            else:
                key = (reg.baseline_revision, reg.device, reg.dtype, reg.threads, reg.heap, reg.batch)
                groups.setdefault(key, []).append(reg)
        confirmed, names = 0, set()
        for key, regs in groups.items():
            confirmed += self._confirm_group(*key, regs, variant_of, tolerance, names, stand, git)
        for reg, why in stand:
            click.echo(f"  {reg}; stands: {why}")
        if not mine:
            click.echo("no flagged core or layer timing: no variant regressed")
            return 0
        click.echo(f"{confirmed + len(stand)} of {len(mine)} flagged core and layer timings fail the gate: {confirmed} "
                   f"confirmed beside the baseline's code, {len(stand)} not timed beside it (stand)")
        return 1 if confirmed or stand else 0

    def _why_not(self, reg, variant: str | None, git: _Git) -> str | None:
        """Why `reg` cannot be timed beside its baseline's code, from its rows and this checkout."""
        import torch

        from attnbench.benchmarks import guard
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
            changed = git.changed_since(reg.revision) & git.module_files(variant, reg.revision)[1]
        except AttnbenchError as exc:
            return str(exc)
        if changed:
            return (f"{', '.join(sorted(changed))} here differ from {reg.revision[:7]}, where the run checked was "
                    "timed: timing the working tree again would not time its code")
        return None

    def _confirm_group(self, revision, device, dtype, threads, heap, batch, regs, variant_of, tolerance,
                       names: set[str], stand: list, git: _Git) -> int:
        """Time `regs` (of one batch) beside `revision`'s code, in a run named STEM-confirm-<hash>-b<batch>
        (not one of `names`, the runs before it); how many that confirms. Rows it cannot time beside
        that code join `stand`, with why."""
        from attnbench.benchmarks import guard
        from attnbench.benchmarks.suite import range_text, round_range

        try:
            changed = git.changed_since(revision)
        except AttnbenchError as exc:
            stand.extend((reg, str(exc)) for reg in regs)
            return 0
        timed = []
        for reg in regs:  # code the module shares, from the working tree on both sides: its change would not show
            own, uses = git.module_files(variant_of[reg.case], revision)
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
            cfg = replace(perf_run.config(**settings, revision=revision), cases=tuple(sorted({r.case for r in timed})),
                          memory_probes=())
            at_rev = perf_run.load_revision(cfg) if timed else None
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
        name = next(n for n in itertools.chain([name], (f"{name}-{i}" for i in itertools.count(2)))  # no earlier run's files
                    if n not in names and not any(Path(self.out_dir, n + s).exists() for s in (".csv", ".png", ".md")))
        names.add(name)
        where = "; ".join(f"{case} at n = {', '.join(str(n) for c, n in cells if c == case)}" for case in cfg.cases)
        click.echo(f"timing {len(timed)} flagged rows again beside {short}'s code, the baseline's revision "
                   f"({where}; batch {batch}):")
        csv = perf_run.execute(cfg, self.out_dir, name, self.note, at_rev)
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


class _Git(NamedTuple):
    """`revision.changed_since` and `revision.module_files`, each answering once per argument."""

    changed_since: Callable[[str], set[str]]
    module_files: Callable[..., tuple[str, set[str]]]


_DTYPE_OPTION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # a CSV's dtype → --dtype
BUSY = 0.8  # a confirming run whose matmul peak is below this fraction of the checked run's says so


def _peak(frame) -> float | None:
    """The median matmul peak (FLOP/s) a results frame recorded, None without one."""
    import pandas as pd

    if "matmul_peak_flops" not in frame.columns:
        return None
    peaks = pd.to_numeric(frame["matmul_peak_flops"], errors="coerce").dropna()  # text there: no peak
    return float(peaks.median()) if len(peaks) else None


def report(result, tolerance, against: str, rerun: str | None) -> int:
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
