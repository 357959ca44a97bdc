"""`bench run` (a sweep with progress and a summary) and `bench export`."""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource
import numpy as np
import pandas as pd
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from attnbench.cli import Choice, RunPath, cli, console, outliving_a_closed_stdout, plugin_option, resolve_device
from attnbench.errors import AttnbenchError
from attnbench.limits import MAX_THREADS
from attnbench.plugins import import_plugin, installed_plugins, plugin_digests, recorded_plugin
from attnbench.runner.cells import KINDS, Cell
from attnbench.runner.execute import cell_budget, checks_budget
from attnbench.runner.environment import collect
from attnbench.runner.executors import EXECUTORS
from attnbench.runner.report import AVERAGE, accuracy_frame, efficiency_frame, timed_forward_only
from attnbench.runner import ray_executor
from attnbench.runner.pool import MAX_JOBS, resolve_jobs
from attnbench.runner.store import (
    STATUSES, check_new_run, done_keys, export, load_results, recorded_labels, recorded_options, threads_text,
)
from attnbench.runner.sweep import SweepPlan, SweepRequest, open_store, pending_cells, plan_sweep, run_sweep

# the options a run records in env.json; `--resume DIR` takes each one not given again from there
RECORDED = ("profile", "variants", "tasks", "lengths", "efficiency_lengths", "seeds", "kinds", "device", "dtype",
            "threads", "executor", "jobs", "cross", "max_cell_seconds")


STATUS_STYLE = {"ok": "green", "unsupported": "yellow", "timeout": "magenta", "oom": "magenta", "error": "bold red"}


def parse_ints(flag: str, text: str | None) -> tuple[int, ...] | None:
    """'256,1024' → (256, 1024); anything else is a one-line error."""
    if text is None:
        return None
    example = "0,1,2" if flag == "--seeds" else "256,1024"
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise AttnbenchError(f"{flag}: expected comma-separated ints such as {example}, got {text!r}")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise AttnbenchError(f"{flag}: expected comma-separated ints such as {example}, got {text!r}") from None


def run_directory(flag: str, text: str | None) -> Path | None:
    """The directory of --out or --resume; an empty one is refused, since it would be the current
    directory and scatter a run's files among the user's own."""
    if text is None:
        return None
    if not text.strip():
        raise AttnbenchError(f"{flag}: empty path; name a directory, e.g. {flag} results/runs/mine")
    return Path(text)


def retry_statuses(text: str | None, resume: Path | None) -> tuple[str, ...]:
    """--retry's statuses (None: not given); they rerun cells already recorded, so they need --resume."""
    if text is None:
        return ()
    statuses = tuple(s.strip() for s in text.split(",") if s.strip())
    if not statuses:
        raise AttnbenchError(f"--retry: empty list (give statuses, e.g. error,timeout; statuses: {', '.join(STATUSES)})")
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise AttnbenchError(f"--retry: unknown status {unknown[0]!r} (statuses: {', '.join(STATUSES)})")
    if statuses and resume is None:
        raise AttnbenchError("--retry reruns cells of a recorded run: give --resume DIR with it")
    return statuses


def describe(record: dict) -> str:
    """One line about a finished cell (rich markup: the texts a variant or task chose are escaped,
    so an error message such as 'bad index [3]' prints whole)."""
    status = record["status"]
    where = f"{record['variant_label']} {record['task_label'] if record['task'] else ''} n={record['seq_len']}"
    where = escape(" ".join(where.split()))
    if status != "ok":
        return (f"[{STATUS_STYLE[status]}]{status}[/] {record['kind']} {where} seed={record['seed']}: "
                f"{escape(record['message'])}")
    result = record["result"]
    if record["kind"] == "efficiency":
        if timed_forward_only(record):
            what = (f"fwd {result['fwd']['median_s'] * 1e3:.2f} ms, peak {result['peak_bytes_fwd'] / 2**20:.1f} MiB;"
                    f" {escape(record['message'])}")
        else:
            what = (
                f"fwd {result['fwd']['median_s'] * 1e3:.2f} ms, fwd+bwd {result['fwd_bwd']['median_s'] * 1e3:.2f} ms, "
                f"peak {result['peak_bytes_fwd_bwd'] / 2**20:.1f} MiB"
            )
    else:
        if "baseline_bits_per_byte" in result:
            scale = f"unigram baseline {result['baseline_bits_per_byte']:.3f}"
        else:
            scale = f"chance {result['chance']:.3f}"
        what = f"{result['metric']} {result['score']:.3f} ({scale}), {result['steps']} steps"
    return f"[green]ok[/] {record['kind']} {where} seed={record['seed']}: {what} [{record['seconds']:.1f} s]"


def summary_tables(records: list[dict]) -> list[Table]:
    """Accuracy (variant × task, mean over seeds and lengths) and efficiency (fwd+bwd ms per n)."""
    tables = [_accuracy_summary(records), _efficiency_summary(records)]
    return [t for t in tables if t is not None]


def _accuracy_summary(records: list[dict]) -> Table | None:
    frame = accuracy_frame(records)
    cells = frame[frame.column != AVERAGE]
    if cells.empty:
        return None
    tasks = list(dict.fromkeys(cells.task))
    table = _table("accuracy cells: test score (mean over seeds and lengths)", tasks)
    scores = {key: _score_text(lengths) for key, lengths in cells.groupby(["variant", "task"], sort=False)}
    for variant in _labels(records, "accuracy"):
        table.add_row(variant, *(scores.get((variant, t), "") for t in tasks))
    return table


def _score_text(lengths: pd.DataFrame) -> str:
    """One variant's score on one task pooled over its lengths' ok seeds, "(k/m seeds)" after it where
    a seed did not score (as the report marks it); its statuses if none scored."""
    scored = lengths[lengths.ok_seeds > 0]
    if scored.empty:
        return ",".join(sorted({s for status in lengths.status for s in status.split("/")}))
    if len(scored) == 1:  # one length: its mean as it is, not re-weighted
        text = f"{scored['mean'].iloc[0]:.3f}"
    else:
        text = f"{np.average(scored['mean'], weights=scored.ok_seeds):.3f}"
    ok, total = int(lengths.ok_seeds.sum()), int(lengths.seeds.sum())
    return text if ok == total else f"{text} ({ok}/{total} seeds)"


def _efficiency_summary(records: list[dict]) -> Table | None:
    frame = efficiency_frame(records)
    if frame.empty:
        return None
    lengths = sorted(set(frame.seq_len))
    table = _table("efficiency cells: attention layer forward+backward, median ms (peak MiB)",
                   [f"n={n}" for n in lengths])
    times = {(r.variant, r.seq_len): _time_text(r) for r in frame.itertuples()}
    for variant in _labels(records, "efficiency"):
        table.add_row(variant, *(times.get((variant, n), "") for n in lengths))
    return table


def _time_text(cell) -> str:
    """'12.3 (4.5)': median fwd+bwd ms (peak MiB) of an ok cell; 'fwd 1.2 (0.5)' where it has
    no backward on this device (forward only); else its status."""
    if cell.status != "ok":
        return cell.status
    if math.isnan(cell.fwd_bwd_ms):
        return f"fwd {cell.fwd_ms:.1f} ({cell.peak_mib_fwd:.1f})"
    return f"{cell.fwd_bwd_ms:.1f} ({cell.peak_mib_fwd_bwd:.1f})"


def _table(title: str, columns: list[str]) -> Table:
    """A summary table: a variant column, then `columns` right-aligned."""
    table = Table(title=title)
    table.add_column("variant")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _labels(records: list[dict], kind: str) -> list[str]:
    """The variant labels of `kind` cells, in the order they first ran."""
    return list(dict.fromkeys(r["variant_label"] for r in records if r["kind"] == kind))


@cli.command("run")
@click.option("--variants", default="all", show_default=True, help="'all', globs, or names with options: 'local(window=64),linear'.")
@click.option("--tasks", default="all", show_default=True, help="'all', globs, or task names with options.")
@click.option("--profile", default="quick", show_default=True, help="Grid and budgets (bench ls profiles).")
@click.option("--lengths", default=None, help="Sequence lengths of accuracy cells, e.g. 64,256 (default: the profile's per task).")
@click.option("--efficiency-lengths", default=None, help="Sequence lengths of efficiency cells, e.g. 1024,4096.")
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2 (default: the profile's).")
@click.option("--kinds", default=",".join(KINDS), show_default=True, help="Cell kinds to run.")
@click.option("--device", type=Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
              help="Torch threads (default: torch's; recorded).")
@click.option("--executor", type=Choice(EXECUTORS), default="local", show_default=True,
              help="local: in-process; subprocess: a worker process that a hang or crash costs one cell; "
                   "ray: Ray actors, on this machine or the cluster RAY_ADDRESS names (attnbench[ray]).")
@click.option("--jobs", type=click.IntRange(1, MAX_JOBS), default=None,
              help="Accuracy cells at once, each in its own worker (subprocess, ray); efficiency cells are "
                   "always timed one at a time [default: 1; ray: as many as the cluster holds].")
@click.option("--cross", default=None,
              help="Variant for cross-attention in seq2seq, options inline as in --variants: 'additive(heads=2)' "
                   "(default: the same variant).")
@click.option("--max-cell-seconds", type=float, default=None,
              help="Time budget of every cell (default: the profile's; quick: 120 s, its efficiency cells 10 s); "
                   "an accuracy cell's layer checks run before it under their own limit, the same, at least 10 s. "
                   "A resume may change it: --resume DIR --retry timeout --max-cell-seconds 600.")
@click.option("--out", default=None, help="Run directory (default results/runs/<time>-<profile>).")
@click.option("--resume", default=None, help="Continue the run in this directory.")
@click.option("--retry", default=None, help="On --resume, also rerun cells with these statuses, e.g. error,timeout.")
@click.option("--quiet", is_flag=True, help="No progress or per-cell lines; print only the run directory.")
@click.option("--dry-run", is_flag=True,
              help="Print the cells this command would run and a bound on its time; run and write nothing.")
@plugin_option
@click.pass_context
def run_command(ctx, out, resume, retry, quiet, dry_run, **params) -> int:
    """Sweep variants × tasks × lengths × seeds; train, measure and record every cell.

    `--resume DIR` continues a run with the options it started with; an option given again must
    plan the same grid.

    \b
    Examples:
      bench run --variants all                       # the quick profile, a few minutes on a CPU
      bench run --variants 'local(window=16),multi-head' --tasks distance --lengths 128
      bench run --profile smoke --executor subprocess --max-cell-seconds 60
      bench run --profile standard --executor subprocess --jobs 4 --threads 2
      bench run --resume results/runs/20261127-101500-quick
      bench run --profile standard --dry-run           # how many cells, and how long at most
    """
    out, resume = run_directory("--out", out), run_directory("--resume", resume)
    if out is not None and resume is not None:
        raise AttnbenchError("--out and --resume: give one (--resume continues the run where it is)")
    statuses = retry_statuses(retry, resume)
    plugins = tuple(ctx.meta.get("attnbench.plugins", ()))
    taken = []  # the run's own options this resume takes: said once the resume is known to go ahead
    if resume is not None:
        params, plugins, taken = _with_recorded_options(ctx, resume, params, plugins)
    executor = params["executor"]
    request = SweepRequest(
        profile=params["profile"],
        variants=params["variants"],
        tasks=params["tasks"],
        lengths=parse_ints("--lengths", params["lengths"]),
        efficiency_lengths=parse_ints("--efficiency-lengths", params["efficiency_lengths"]),
        seeds=parse_ints("--seeds", params["seeds"]),
        kinds=tuple(k.strip() for k in params["kinds"].split(",") if k.strip()),
        device=resolve_device(params["device"]),
        dtype=params["dtype"],
        threads=params["threads"],
        executor=executor,
        jobs=params["jobs"],
        max_cell_seconds=params["max_cell_seconds"],
        cross=params["cross"],
        plugins=plugins,
        recorded_tasks=recorded_labels(resume, "tasks") if resume is not None else None,
        recorded_variants=recorded_labels(resume, "variants") if resume is not None else None,
        resuming=resume is not None,
    )
    sweep = plan_sweep(request)
    _warn_if_crowded(executor, params["jobs"], sweep.plan.threads, sweep.cells)
    if dry_run:
        if out is not None:  # what the run itself would refuse: a run already there, a place it cannot write
            check_new_run(out)
        todo = pending_cells(sweep, resume, statuses)
        _say_taken(taken, quiet)
        _print_plan(sweep, todo, params["jobs"])
        return 0
    options = {**params, "tasks": sweep.tasks_text,  # data paths absolute: a resume elsewhere reads the same files
               "variants": sweep.variants_text or params["variants"],  # repeats merged: a resume plans the same
               "plugins": [recorded_plugin(t) for t in plugins]}  # importable from any directory
    jobs = params["jobs"]
    if executor == "ray":
        ray_executor.quiet(quiet)
        if any(c.kind == "accuracy" for c in pending_cells(sweep, resume, statuses)):
            jobs = resolve_jobs(executor, sweep.plan, jobs)  # the cluster reached, and --jobs checked, before a write
    with outliving_a_closed_stdout("the run"):  # `bench run | head`: every cell still runs and is recorded
        _run_and_summarise(sweep, out, resume, options, taken, quiet, executor, jobs, statuses)
    return 0


def _run_and_summarise(sweep, out, resume, options, taken, quiet, executor, jobs, statuses) -> None:
    store = open_store(sweep, out=out, resume=resume, argv=["bench", *sys.argv[1:]], options=options)
    _say_taken(taken, quiet)
    with store:
        if resume is not None:
            _record_resume(store, sweep, resume, statuses, options["plugins"])
        if quiet:
            outcome = run_sweep(sweep, store, executor=executor, jobs=jobs, retry=statuses)
        else:
            outcome = _run_with_progress(sweep, store, executor, jobs, statuses)
    bad = [r for r in outcome.records if r["status"] != "ok"]
    if quiet:
        click.echo(str(outcome.path))
        return
    for table in summary_tables(outcome.records):
        console.print(table)
    counts = pd.Series([r["status"] for r in outcome.records]).value_counts().to_dict()
    console.print(
        f"{outcome.ran} cells run"
        + (f" ({outcome.retried} of them again, for --retry)" if outcome.retried else "")
        + f", {outcome.skipped} already recorded, in {outcome.seconds:.0f} s; "
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
    )
    console.print(f"run directory: {outcome.path}")
    console.print(f"next: bench report {outcome.path}   |   bench plot {outcome.path}"
                  + ("" if not bad else f"   (cells not ok: {len(bad)}; listed by bench report)"))


def _record_resume(store, sweep: SweepPlan, resume: Path, statuses: tuple[str, ...], plugins: list[str]) -> None:
    """A resume that runs cells records its code and machine in env.json (`RunStore.record_resume`),
    its plugins' sources too, and warns where they differ from the run's start: its cells and the
    recorded ones would otherwise sit in one table as if one build on one machine had made them all."""
    records = store.records()  # the store's grid is the checked one; run_sweep reads them again as it starts
    done = done_keys(records, retry=statuses)
    todo = sum(cell.key not in done for cell in sweep.cells)
    if not todo:
        return
    plan = sweep.plan
    now = collect(device=plan.device, dtype=plan.dtype, threads=plan.threads, measure_peak=False)
    changes = store.record_resume({**now, "plugins": plugin_digests(plugins), "installed_plugins": installed_plugins()},
                                  recorded=len(records))
    if changes:
        left = f"its {todo} cells left run" if todo > 1 else "its one cell left runs"
        click.echo(f"bench: warning: --resume {resume}: {left} on other code or another machine than the run's "
                   f"first ({'; '.join(changes)}); env.json and bench report name each resume", err=True)


def _warn_if_crowded(executor: str, jobs: int | None, threads: int, cells: list[Cell]) -> None:
    """One line when the cells to run want more threads than this machine has cores: `--jobs`
    workers on accuracy cells (efficiency cells run one at a time), or `--threads` alone, past the
    cores, where every timing reads the threads' contention, not the kernel."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    pooled = any(c.kind != "efficiency" for c in cells)  # the cells a pool of --jobs workers runs
    if executor == "subprocess" and jobs and pooled and jobs * threads > cores:
        if jobs <= cores:  # fewer threads a cell, where each job keeps a core
            fits = f"--threads {cores // jobs}"
        elif threads <= cores:
            fits = f"--jobs {cores // threads}"
        else:
            fits = f"--jobs {cores} --threads 1"
        click.echo(f"bench: warning: --jobs {jobs} × {threads_text(threads)} a cell exceeds this machine's {cores} "
                   f"cores; cells will contend for them ({fits} fits)", err=True)
    elif threads > cores:
        timed = " (and every efficiency cell's timing with them)" if any(c.kind == "efficiency" for c in cells) else ""
        click.echo(f"bench: warning: --threads {threads} exceeds this machine's {cores} cores; each cell's threads "
                   f"will contend for them{timed} (--threads {cores} fits)", err=True)


def _print_plan(sweep: SweepPlan, todo: list[Cell], jobs: int | None) -> None:
    """`--dry-run`: the cells to run, one row per (kind, variant, task), and their time budget."""
    if not todo:
        console.print(f"all {len(sweep.cells)} cells of the grid are recorded: nothing to run", highlight=False)
        return
    table = Table(title=f"bench run --dry-run: {len(todo)} of the grid's {len(sweep.cells)} cells to run")
    for column in ("kind", "variant", "task", "lengths", "seeds", "cells"):
        table.add_column(column, justify="right" if column == "cells" else "left")
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in todo:
        groups.setdefault((cell.kind, cell.variant_label, cell.task_label or "-"), []).append(cell)
    for (kind, variant, task), cells in groups.items():
        lengths = ",".join(map(str, sorted({c.seq_len for c in cells})))
        seeds = ",".join(map(str, sorted({c.seed for c in cells})))
        table.add_row(kind, variant, task, lengths, seeds, str(len(cells)))
    console.print(table)
    from attnbench.tasks.base import TASKS

    seq2seq = [c for c in todo if c.kind == "accuracy" and TASKS[c.task].spec.kind == "seq2seq"]
    if sweep.plan.cross and seq2seq:  # not in the table's labels
        console.print(f"seq2seq decoders cross-attend with {sweep.plan.cross} (--cross)", highlight=False)
    budgets = [cell_budget(cell, sweep.plan) for cell in todo]
    if all(budgets):
        # an accuracy cell's layer checks run first, under their own limit (checks_budget)
        checks = [checks_budget(cell, sweep.plan) or 0.0 for cell in todo]
        total = _most_seconds(todo, [b + c for b, c in zip(budgets, checks)], jobs or 1)
        at_once = f", {jobs} accuracy cells at a time" if jobs and jobs > 1 else ""
        checked = sorted({c for c in checks if c})
        checking = f", up to {' or '.join(f'{c:g} s' for c in checked)} of layer checks before an accuracy cell" \
            if checked else ""
        console.print(f"at most {_duration(total)} if every cell used its whole budget "
                      f"({', '.join(f'{b:g} s' for b in sorted(set(budgets)))} a cell{checking}{at_once})",
                      highlight=False)
    else:
        console.print("no time bound: this profile gives its cells no budget (--max-cell-seconds sets one)",
                      highlight=False)
    console.print("nothing was run or written (drop --dry-run to run it)", highlight=False)


def _most_seconds(todo: list[Cell], budgets: list[float], jobs: int) -> float:
    """The longest the cells may take, each within its `budgets` entry (an accuracy cell's with its
    layer checks' limit): efficiency cells one after another, accuracy cells `jobs` at
    a time, each starting as soon as a job is free (so at most sum/jobs + (1 - 1/jobs)·longest:
    Graham's bound for list scheduling)."""
    timed = [b for c, b in zip(todo, budgets) if c.kind == "efficiency"]
    pooled = [b for c, b in zip(todo, budgets) if c.kind != "efficiency"]
    spread = sum(pooled) / jobs + (1 - 1 / jobs) * max(pooled) if pooled else 0.0
    return sum(timed) + spread


def _duration(seconds: float) -> str:
    """'2 h 05 min', '12 min', '40 s': rounded up, since it states a bound."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _say_taken(taken: list[str], quiet: bool) -> None:
    if taken and not quiet:
        click.echo(f"resuming with the run's own options: {' '.join(taken)}", err=True)


def _with_recorded_options(ctx, resume: Path, params: dict, plugins: tuple) -> tuple[dict, tuple, list[str]]:
    """`--resume DIR`: each option not given on this command line is the one the run started with
    (env.json `options`, and its plugins, imported now); a run from before options were recorded
    keeps the command line's. Also returns the options taken, as `--name value` words to show."""
    recorded = recorded_options(resume)
    taken = {
        name: recorded[name]
        for name in RECORDED
        if name in recorded and ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None)
    }
    if not plugins and recorded.get("plugins"):
        plugins = tuple(recorded["plugins"])
        for target in plugins:
            import_plugin(target)
    if "executor" not in taken and params["executor"] != recorded.get("executor"):
        taken.pop("jobs", None)  # an executor other than the run's does not take the run's --jobs
    # quoted as a shell needs them, so the line pastes back: 'cosine-demo(temperature=5)'
    shown = [f"--{name.replace('_', '-')} {shlex.quote(str(value))}" for name, value in taken.items()
             if value != params[name]]
    shown += [f"--plugin {shlex.quote(str(target))}" for target in plugins
              if target not in ctx.meta.get("attnbench.plugins", ())]
    return {**params, **taken}, plugins, shown


def _run_with_progress(sweep, store, executor, jobs, retry):
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("cells", total=None)

        def on_start(todo: int, skipped: int) -> None:
            progress.update(bar, total=todo)
            if skipped:
                progress.console.print(f"resuming: {skipped} cells already recorded, {todo} to run")

        def on_record(record: dict) -> None:
            progress.console.print(describe(record), highlight=False, markup=True)
            progress.advance(bar)

        return run_sweep(sweep, store, executor=executor, jobs=jobs, retry=retry, on_start=on_start,
                         on_record=on_record)


@cli.command("export")
@click.argument("run", type=RunPath())
@click.option("--format", "fmt", type=Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", default=None,  # text: '' is refused
              help="Output file, or a folder to write cells.FORMAT in (default RUN/cells.FORMAT).")
def export_command(run: Path, fmt: str, out: str | None) -> None:
    """Write a run's cells as one table (one row per cell, nested fields flattened).

    \b
    Examples:
      bench export results/runs/20261127-101500-quick --format csv
      bench export RUN --format parquet --out cells.parquet
    """
    other = {"csv": "parquet", "parquet": "csv"}[fmt]
    if out is not None and Path(out).suffix.lower() == f".{other}":  # a parquet file named .csv reads as neither
        raise AttnbenchError(f"--out {out}: a .{other} name for --format {fmt}; name it .{fmt}, or give --format {other}")
    try:
        path = export(run, fmt, out)
    except AttnbenchError:
        raise
    except Exception as err:  # noqa: BLE001 — any failed write is one line, e.g. pyarrow's OverflowError
        where = out if out is not None else run / f"cells.{fmt}"
        first = next(iter(str(err).splitlines()), "")
        raise AttnbenchError(f"cannot write {where}: {type(err).__name__}: {first}") from None
    rows = len(load_results(run))
    console.print(f"wrote {rows} cells to {path}")
