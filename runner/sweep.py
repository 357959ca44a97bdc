"""A sweep: a profile plus overrides → a grid of cells → records in a run directory.

    request = SweepRequest(profile="quick", variants="all", tasks="all")
    outcome = run_sweep(request, out=None, resume=None)     # results/runs/<timestamp>-quick

Every input is validated before any work starts (one-line AttnbenchError). Cells start in a fixed
order — accuracy cells grouped by task, then efficiency cells — each ends in a record appended to
the store as soon as it finishes, so a killed run loses at most the cells in flight and
`--resume DIR` picks up where it stopped. With `jobs` > 1, up to that many accuracy cells run at
once (`runner.pool`), and their records land in the order they finish; efficiency cells always run
one at a time, alone, after them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from attnbench.errors import AttnbenchError, OptionError
from attnbench.limits import MAX_SEED, MAX_TOKENS
from attnbench.options import data_path, names_a_path
from attnbench.plugins import installed_plugins, plugin_digests
from attnbench.registry import BUILT_IN
from attnbench.runner.cells import KINDS, Cell
from attnbench.runner.environment import collect
from attnbench.runner.execute import DTYPES, Plan
from attnbench.runner.executors import EXECUTORS, make_executor, timing_executor
from attnbench.runner.pool import CellPool, check_jobs
from attnbench.runner.ray_executor import check_available
from attnbench.runner.profiles import PROFILES, Profile
from attnbench.runner.store import (
    RunStore,
    check_writable,
    cleared_if_not_started,
    default_run_dir,
    done_keys,
    read_records,
    resumable_grid,
)
from attnbench.selection import Selected, parse_one, parse_selection
from attnbench.tasks.base import SPLITS, TASKS, build_task
from attnbench.tasks.files import file_digest
from attnbench.variants.base import VARIANTS, build_variant, get_variant_spec

DEFAULT_ROOT = Path("results") / "runs"
MAX_CELL_SECONDS = 1e9  # SIGALRM's timer overflows on larger values (and on inf)


class SweepWarning(UserWarning):
    """Something the request gives that the sweep leaves out (a selection given twice, an unused option)."""


@dataclass(frozen=True)
class SweepRequest:
    """What the user asked for: a profile and the overrides of its grid."""

    profile: str = "quick"
    variants: str = "all"
    tasks: str = "all"
    lengths: tuple[int, ...] | None = None
    efficiency_lengths: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    kinds: tuple[str, ...] = KINDS
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    executor: str = "local"
    jobs: int | None = None  # accuracy cells at once (None: 1, or the Ray cluster's slots); not part of the grid
    max_cell_seconds: float | None = None
    cross: str | None = None
    plugins: tuple[str, ...] = ()
    recorded_tasks: tuple[str, ...] | None = None  # on --resume: the task labels the run's grid holds
    recorded_variants: tuple[str, ...] | None = None  # on --resume: the variant labels the run's grid holds
    # on --resume the grid is the run's, as it was planned then: none of what plan_sweep has refused
    # or merged since (a selection spelled twice, an option that does not fit, an empty --cross)
    resuming: bool = False
    retry: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class SweepPlan:
    """The validated grid: cells in order, the shared plan, and the grid as stored in grid.json."""

    profile: Profile
    cells: list[Cell]
    plan: Plan
    grid: dict[str, Any]
    tasks_text: str = ""  # --tasks as a run records it: with data paths made absolute, if any were given
    variants_text: str = ""  # --variants as a run records it: as given, or as merged (`_distinct_selections`)


def plan_sweep(request: SweepRequest) -> SweepPlan:
    """Validate `request` against the registries and the profile; the cells to run."""
    profile = PROFILES[request.profile]
    if request.executor not in EXECUTORS:
        raise AttnbenchError(f"--executor: {request.executor!r} is not one of {', '.join(EXECUTORS)}")
    check_jobs(request.jobs, request.executor)
    if request.executor == "ray":
        check_available()
    if request.dtype not in DTYPES:
        raise AttnbenchError(f"--dtype: {request.dtype!r} is not one of {', '.join(DTYPES)}")
    unknown = [k for k in request.kinds if k not in KINDS]
    if unknown or not request.kinds:
        raise AttnbenchError(f"--kinds: give one or more of {', '.join(KINDS)}, got {','.join(request.kinds)!r}")
    parsed = parse_selection(request.variants, VARIANTS, lambda n: get_variant_spec(n).options)
    kept = _distinct_selections(
        "--variants", parsed, lambda v: get_variant_spec(v.name).resolve(v.name, _variant_options(v, profile)),
        resuming=request.resuming, recorded=request.recorded_variants,
        labels=lambda v: [Selected(v.name, _variant_options(v, profile)).label])
    variants = [Selected(v.name, _variant_options(v, profile)) for v in kept]
    variants_text = request.variants if len(kept) == len(parsed) else ",".join(v.label for v in kept)
    parsed = (parse_selection(request.tasks, TASKS, lambda n: TASKS[n].spec.options, what="--tasks")
              if "accuracy" in request.kinds else [])
    given = _distinct_selections(
        "--tasks", parsed, lambda t: TASKS[t.name].spec.resolve(t.name, _task_options(_absolute_paths(t), profile)),
        resuming=request.resuming, recorded=request.recorded_tasks,
        labels=lambda t: [t.label, _absolute_paths(t).label])  # an old run's relative path, or absolute
    merged_tasks = len(given) != len(parsed)
    tasks = [_absolute_paths(t) for t in given]
    if request.recorded_tasks is not None and [t.label for t in given] == list(request.recorded_tasks):
        tasks = given  # a run recorded before data paths were made absolute keeps its cells' keys
    given_cross = request.cross
    if request.resuming and given_cross is not None and not given_cross.strip():
        given_cross = None  # a run started with --cross '' before '' was refused: it was planned without one
    cross_choice = _cross_choice(given_cross) if given_cross is not None else None  # '' is refused there
    cross = cross_choice.label if cross_choice else None
    seeds = _distinct(request.seeds if request.seeds is not None else profile.seeds)
    _check_ints("--seeds", seeds, minimum=0, maximum=MAX_SEED)
    eff_lengths = _distinct(request.efficiency_lengths or profile.efficiency.lengths)
    _check_ints("--efficiency-lengths", eff_lengths, minimum=1, maximum=MAX_TOKENS)
    lengths = None if request.lengths is None else _distinct(request.lengths)
    if lengths is not None:
        _check_ints("--lengths", lengths, minimum=1, maximum=MAX_TOKENS)
    max_seconds = request.max_cell_seconds if request.max_cell_seconds is not None else profile.max_cell_seconds
    if max_seconds is not None and not 0 < max_seconds <= MAX_CELL_SECONDS:  # also refuses nan
        raise AttnbenchError(
            f"--max-cell-seconds must be positive and at most {MAX_CELL_SECONDS:g}, got {max_seconds:g}"
        )

    built = {t.label: build_task(t.name, **_task_options(t, profile)) for t in tasks}
    seq2seq = any(task.spec.kind == "seq2seq" for task in built.values())  # what a --cross variant is used by
    if not request.resuming:  # a resumed run's cells record what does not build, as they did
        _check_builds(variants, profile, request.kinds)
        if cross_choice and seq2seq:  # else unused: a warning (`_warn_unused`)
            _check_builds([cross_choice], profile, ("accuracy",), flag="--cross")
    lengths_of = {t.label: _task_lengths(t, built[t.label], profile, lengths) for t in tasks}
    data = {str(path): file_digest(path) for task in built.values() for path in task.data_files()}
    cells = [
        Cell.make("accuracy", v.name, v.options, t.name, _task_options(t, profile), n, seed)
        for t in tasks
        for n in lengths_of[t.label]
        for v in variants
        for seed in seeds
    ]
    if "efficiency" in request.kinds:
        cells += [Cell.make("efficiency", v.name, v.options, None, {}, n, seeds[0]) for n in eff_lengths for v in variants]
    by_key: dict[str, Cell] = {}  # each cell once: an older run's grid may name one twice ('local,local(window=4)')
    for cell in cells:
        by_key.setdefault(cell.key, cell)
    cells = list(by_key.values())
    threads = request.threads or torch.get_num_threads()
    plan = Plan(
        size=profile.size.to_dict(),
        train=profile.train.to_dict(),
        # --max-cell-seconds bounds every cell, also where the profile gives efficiency cells their own budget
        efficiency={**profile.efficiency.to_dict(), "lengths": list(eff_lengths),
                    **({} if request.max_cell_seconds is None else {"max_seconds": request.max_cell_seconds})},
        device=request.device,
        dtype=request.dtype,
        threads=threads,
        max_cell_seconds=max_seconds,
        cross=cross,
        plugins=tuple(request.plugins),
        data=data,
    )
    grid = {
        "profile": profile.name,
        "variants": [v.label for v in variants],
        "tasks": [t.label for t in tasks],
        "lengths": {label: list(ns) for label, ns in lengths_of.items()},
        "efficiency_lengths": list(eff_lengths) if "efficiency" in request.kinds else [],
        "seeds": list(seeds),
        "kinds": list(request.kinds),
        "device": request.device,
        "dtype": request.dtype,
        "threads": threads,
        "cross": cross,
        "size": plan.size,
        "train": plan.train,
        "efficiency": plan.efficiency,
        "max_cell_seconds": max_seconds,
    }
    if data:  # only where a task reads a user's file: the grids of other runs stay as they were
        grid["data"] = data
    if not request.resuming:  # the options a resume takes are the run's own, warned about when it started
        _warn_unused(request, seq2seq, seeds)
    tasks_text = ",".join(t.label for t in tasks) if tasks != given or merged_tasks else request.tasks
    return SweepPlan(profile, cells, plan, grid, tasks_text, variants_text)


def _warn_unused(request: SweepRequest, seq2seq: bool, seeds: tuple[int, ...]) -> None:
    """One warning for each option given that no cell of this grid uses."""
    accuracy, efficiency = "accuracy" in request.kinds, "efficiency" in request.kinds
    unused = []
    if request.lengths is not None and not accuracy:
        unused.append("--lengths: sets accuracy cells' lengths, and --kinds has none (--efficiency-lengths sets theirs)")
    if request.efficiency_lengths is not None and not efficiency:
        unused.append("--efficiency-lengths: --kinds has no efficiency cells")
    if request.seeds is not None and not accuracy and len(seeds) > 1:
        unused.append(f"--seeds: efficiency cells are timed once, at the first seed ({seeds[0]}); the others are unused")
    if request.cross and not seq2seq:
        unused.append("--cross: no seq2seq task (translation) in this run to use cross-attention")
    for text in unused:
        warnings.warn(f"{text}; ignored", SweepWarning, stacklevel=3)


def _distinct_selections(
    flag: str, selected: list[Selected], resolve: Callable[[Selected], dict], *, resuming: bool = False,
    recorded: tuple[str, ...] | None = None, labels: Callable[[Selected], list[str]] | None = None,
) -> list[Selected]:
    """`selected` without repeats: two selections whose options, defaults filled in, are the same
    ('local' where the profile gives window=4, and 'local(window=4)') would run the same cells
    twice; the first is kept and the others named in a warning.

    On a resume (`resuming`), quietly, and not where the run's grid (`recorded`: its labels) holds
    the repeats: a run planned before they were merged (`labels(s)`: the grid labels `s` may have
    been recorded as)."""
    kept: dict[tuple, Selected] = {}
    for one in selected:
        same = (one.name, tuple(sorted((k, repr(v)) for k, v in resolve(one).items())))
        if same in kept:
            if not resuming:
                warnings.warn(f"{flag}: {one.label} repeats {kept[same].label} (the same options, defaults and the "
                              "profile's filled in); its cells run once", SweepWarning, stacklevel=2)
        else:
            kept[same] = one
    merged = list(kept.values())
    if resuming and recorded is not None and labels is not None and len(merged) < len(selected):
        if len(recorded) == len(selected) and all(r in labels(s) for r, s in zip(recorded, selected)):
            return list(selected)  # the run's grid names every repeat: it was planned unmerged
    return merged


def _check_builds(variants: list[Selected], profile: Profile, kinds: tuple[str, ...], flag: str = "--variants") -> None:
    """Build each built-in variant at the width of the model its cells use: an option that does not
    fit it (additive heads that do not divide d_model) is bad input, not a run of cells that all
    fail. A plugin's layer is built in its cells only: there a fault or a hang costs one cell."""
    sizes = ([(profile.size.d_model, profile.size.n_heads)] if "accuracy" in kinds else []) + (
        [(profile.efficiency.d_model, profile.efficiency.n_heads)] if "efficiency" in kinds else [])
    for v in variants:
        if VARIANTS.get(v.name).origin != BUILT_IN:
            continue
        for d_model, n_heads in dict.fromkeys(sizes):
            try:
                with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
                    build_variant(v.name, d_model=d_model, n_heads=n_heads, **v.options)
            except OptionError as exc:
                raise AttnbenchError(
                    f"{flag}: {v.label} does not fit the {profile.name} profile's model "
                    f"(d_model={d_model}, n_heads={n_heads}): {exc}") from None
            except AttnbenchError:  # unsupported here (no C++ compiler for kernel=compiled): its cells say so
                pass


def _distinct(values) -> tuple:
    """`values` in their order, each once: `--seeds 0,0` would otherwise run one cell twice."""
    return tuple(dict.fromkeys(values))


def _check_ints(flag: str, values, *, minimum: int, maximum: int) -> None:
    """Each value an int in [minimum, maximum]: a value past what the generators or numpy's int64
    take would otherwise plan, and end every cell in an error (and break a parquet export)."""
    if not values:
        raise AttnbenchError(f"{flag}: empty list")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise AttnbenchError(f"{flag}: {v!r} is not a {kind} int")
        if v > maximum:
            raise AttnbenchError(f"{flag}: {v} exceeds the maximum of {maximum}")


def _cross_choice(text: str) -> Selected:
    """The cross-attention variant, inline options included ('additive(heads=2)'), parsed as
    --variants parses a name; its label (a bare name stays the canonical name) is what grid.json holds."""
    return parse_one(text, VARIANTS, lambda n: get_variant_spec(n).options, what="--cross")


def _absolute_paths(selected: Selected) -> Selected:
    """`selected` with each path option (`Option.path`) that names an existing file or folder made
    absolute: a cell's key holds its data file, and a resume from another directory must read the
    same one (a relative path would name another file there, or none)."""
    declared = {o.name: o for o in TASKS[selected.name].spec.options}
    options = {k: str(data_path(v)) if k in declared and names_a_path(declared[k], v) else v
               for k, v in selected.options.items()}
    return Selected(selected.name, options)


def _variant_options(selected: Selected, profile: Profile) -> dict[str, Any]:
    """The options given, or where none are, the profile's (smoke: local's window 4)."""
    return selected.options or profile.variant_options.get(selected.name, {})


def _task_options(selected: Selected, profile: Profile) -> dict[str, Any]:
    return {**profile.task_options.get(selected.name, {}), **selected.options}


def _task_lengths(selected: Selected, task, profile: Profile, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """The task's lengths, checked against what it can be built at."""
    lengths = override or profile.lengths_for(selected.name)
    for split in SPLITS:  # a data file read lazily (listops path=) is read here, before any work
        if task.size(split) == 0:
            raise AttnbenchError(f"--tasks: {selected.label} has no {split} examples; its cells could not run")
    # a length the user did not give is the profile's: name it so, and the flag that replaces it
    flag = "--lengths" if override else f"the {profile.name} profile's lengths (pass --lengths)"
    for n in lengths:
        task.check_length(n, flag=flag, label=selected.label)
    return tuple(lengths)


# ---------------------------------------------------------------------------- running
def _skip_longer(cell: Cell, failed_at: dict[str, dict]) -> dict | None:
    """An efficiency cell longer than one of the same variant that ran out of memory or time
    would too: record the same status without running it (a sweep does not spend its budget
    rediscovering that n^2 grows)."""
    first = failed_at.get(cell.variant_label)
    if cell.kind != "efficiency" or first is None or cell.seq_len <= first["seq_len"]:
        return None
    return {
        **cell.to_dict(),
        "status": first["status"],
        "message": f"not run: {first['status']} at n={first['seq_len']} already",
        "result": None,
        "seconds": 0.0,
    }


@dataclass
class SweepOutcome:
    path: Path
    records: list[dict]
    ran: int
    skipped: int  # recorded before and kept
    seconds: float
    retried: int = 0  # of `ran`: recorded before, run again for `retry`


def open_store(
    sweep: SweepPlan, *, out: Path | None, resume: Path | None, argv: list[str] | None, options: dict | None = None
) -> RunStore:
    """A new run directory (env.json measured now, with the command's `options` for a later
    `--resume`), or the run to resume (its grid must match)."""
    if resume is not None:
        return RunStore.resume(resume, grid=sweep.grid)
    path = out or default_run_dir(DEFAULT_ROOT, sweep.profile.name)
    with cleared_if_not_started(path):
        check_writable(path)  # an unwritable --out fails before env.json's measurements
        plan = sweep.plan
        env = collect(device=plan.device, dtype=plan.dtype, threads=plan.threads, argv=argv)
        if options is not None:
            env["options"] = options
            env["plugins"] = plugin_digests(options.get("plugins", []))  # the source each --plugin ran
        env["installed_plugins"] = installed_plugins()  # and each installed one (entry points)
        return RunStore.create(path, grid=sweep.grid, env=env)


def pending_cells(sweep: SweepPlan, resume: Path | None, retry: tuple[str, ...] = ()) -> list[Cell]:
    """The cells a run of `sweep` would run (`--dry-run`): every one, or on `--resume` those not yet
    recorded (or recorded with a status in `retry`). The run's grid is checked as a resume checks
    it; nothing is locked or written."""
    if resume is None:
        return list(sweep.cells)
    resumable_grid(resume, sweep.grid)
    done = done_keys(read_records(resume), retry=retry)
    return [c for c in sweep.cells if c.key not in done]


def run_sweep(
    sweep: SweepPlan,
    store: RunStore,
    *,
    executor: str = "local",
    jobs: int | None = None,
    retry: tuple[str, ...] = (),
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> SweepOutcome:
    """Run every cell not yet recorded in `store`; each record is appended as it finishes.

    Accuracy cells run `jobs` at a time (executors that compute outside this process); efficiency
    cells then run one at a time on this machine, so that no other cell of the sweep shares it
    while they are timed, and in order, so that an out-of-memory or time-out skips the variant's
    longer lengths (`_skip_longer`)."""
    started = time.perf_counter()
    recorded = store.records()  # read once: what is done, and what of the rest --retry runs again
    done = done_keys(recorded, retry=retry)
    todo = [c for c in sweep.cells if c.key not in done]
    retried = len({c.key for c in todo} & done_keys(recorded)) if retry else 0
    plan = replace(sweep.plan, peak_flops=store.env.get("matmul_peak_flops"))
    if on_start:
        on_start(len(todo), len(sweep.cells) - len(todo))

    def keep(record: dict) -> None:
        store.append(record)
        if on_record:
            on_record(record)

    accuracy = [c for c in todo if c.kind != "efficiency"]
    timed = [c for c in todo if c.kind == "efficiency"]
    pool = CellPool(executor, plan, jobs) if accuracy else None  # jobs None: resolve_jobs's default
    timing = timing_executor(executor)
    # the pool's first executor times too where it runs on this machine (a worker that has already
    # imported torch is reused); a Ray pool's cells run elsewhere, so timing gets its own
    timer = pool.executors[0] if pool and timing == executor else make_executor(timing, plan)
    others = [e for e in pool.executors if e is not timer] if pool else []
    failed_at: dict[str, dict] = {}  # efficiency: variant label → its first oom/timeout record
    rerun = {c.key for c in todo}  # --retry: a cell run again now decides by its new record, not its old one
    for earlier in sorted(store.records(), key=lambda r: r["seq_len"]):  # a resumed run's too
        if earlier["kind"] == "efficiency" and earlier["status"] in ("oom", "timeout") and earlier["key"] not in rerun:
            failed_at.setdefault(earlier["variant_label"], earlier)
    try:
        for record in pool.run(accuracy) if pool else ():
            keep(record)
        for other in others:  # timing cells share the machine with no other worker of the sweep
            other.close()
        for cell in timed:
            record = _skip_longer(cell, failed_at) or timer.run(cell)
            if record["status"] in ("oom", "timeout"):
                failed_at.setdefault(cell.variant_label, record)
            keep(record)
    except BaseException:  # Ctrl-C, SIGTERM, a failed write: the cells in flight are abandoned
        for each in [*others, timer]:
            each.close(abandon=True)
        raise
    timer.close()
    return SweepOutcome(
        path=store.path,
        records=store.records(),
        ran=len(todo),
        skipped=len(sweep.cells) - len(todo),
        seconds=time.perf_counter() - started,
        retried=retried,
    )
