"""`bench show-task` and the task and profile tables of `bench ls`."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from attnbench.cli import Choice, cli, console, plugin_option
from attnbench.errors import AttnbenchError, user_code
from attnbench.limits import MAX_SEED, MAX_SHOWN
from attnbench.runner.profiles import PROFILES
from attnbench.selection import parse_one
from attnbench.tasks.base import SPLITS, TASKS, Task, build_task

# show-task is for reading a few examples by eye. A task with no maximum length of its own would
# generate whatever --seq-len says (100M tokens: minutes and gigabytes, to print what no one
# reads), so it is held to MAX_SHOWN (8192), past every task length of every profile (the longest
# is lra's 4000).


def tasks_table(pattern: str | None) -> tuple[Table, int]:
    """name, kind, metric, chance (at default options), source and licence, options."""
    entries = TASKS.entries(pattern)
    table = Table(title="tasks" + (f" matching {pattern!r}" if pattern else ""))
    for column in ("name", "kind", "metric", "chance", "source", "licence", "options"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        spec = entry.obj.spec
        try:
            chance = chance_text(build_task(entry.name))
        except AttnbenchError as exc:  # e.g. its data package is missing: say so in the row
            chance = f"unavailable: {exc}"
        options = ", ".join(f"{o.name}: {o.type.__name__} = {o.default!r}" for o in spec.options)
        table.add_row(entry.name, spec.kind, spec.metric, chance, spec.source, spec.licence, options or "-")
    return table, len(entries)


def chance_text(task: Task) -> str:
    """What a guesser scores on `task`: its chance accuracy, or for a bits-per-byte task the unigram
    baseline (the report's chance row for it)."""
    if task.spec.metric == "bits_per_byte" and hasattr(task, "unigram_bits_per_byte"):
        return f"{task.unigram_bits_per_byte():.2f} bpb (unigram)"
    return f"{task.chance:.3f}"


def profiles_table(pattern: str | None) -> tuple[Table, int]:
    """Each profile's lengths, seeds, model, training budget, efficiency layer and lengths, and the
    options it gives variants named without their own (local's window)."""
    entries = PROFILES.entries(pattern)
    table = Table(title="profiles (bench run --profile NAME)")
    for column in ("name", "lengths", "seeds", "model", "training", "efficiency layer and n", "variant defaults",
                   "cell budget", "about"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        p = entry.obj
        per_task = "; ".join(f"{t}: {','.join(map(str, ns))}" for t, ns in p.task_lengths.items())
        table.add_row(
            p.name,
            ",".join(map(str, p.lengths)) + (f" ({per_task})" if per_task else ""),
            ",".join(map(str, p.seeds)),
            f"d={p.size.d_model} L={p.size.n_layers} h={p.size.n_heads}",
            f"{p.train.steps} steps x {p.train.batch_size}",
            f"d={p.efficiency.d_model} h={p.efficiency.n_heads} b={p.efficiency.batch}; "
            + ",".join(map(str, p.efficiency.lengths)),
            "; ".join(f"{v}: " + ",".join(f"{k}={o!r}" for k, o in opts.items()) for v, opts in p.variant_options.items())
            or "-",
            (f"{p.max_cell_seconds:g} s" if p.max_cell_seconds else "-")
            + (f" (efficiency {p.efficiency.max_seconds:g} s)" if p.efficiency.max_seconds else ""),
            p.description,
        )
    return table, len(entries)


@cli.command("show-task")
@click.argument("name")
@click.option("--seq-len", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True)
@click.option("--split", type=Choice(SPLITS), default="train", show_default=True)
@click.option("-n", "count", type=click.IntRange(min=1, max=50), default=3, show_default=True, help="Examples to show.")
@plugin_option
def show_task_command(name: str, seq_len: int, seed: int, split: str, count: int) -> None:
    """Print a few decoded examples of a task with their targets and distances.

    \b
    Examples:
      bench show-task distance --seq-len 48
      bench show-task 'mqar(num_kv_pairs=4)' --seq-len 32 -n 2
    """
    choice = parse_one(name, TASKS, lambda n: TASKS[n].spec.options, what="show-task")
    task = build_task(choice.name, **choice.options)
    check_show_length(task, choice.label, seq_len)
    with user_code(f"{choice.label}: generating examples"):  # a plugin task's own fault: one line
        batch = task.build(split, count, seq_len, seed)
    with user_code(f"{choice.label}: describing its data"):
        spec = task.spec_as_built()  # the data these options read (a user's file, not the built-in corpus)
    # Text, not markup: the examples are data, and a corpus holds "[see APP Note]" (console in cli.py)
    console.print(
        Text(choice.label, style="bold"),
        Text(f"— {spec.description}\n"
             f"kind {spec.kind}, metric {spec.metric}, chance {chance_text(task)}, vocab {task.vocab_size}"
             + (f", classes {task.n_classes}" if task.n_classes else "")
             + f"; {split} split, seq_len {seq_len}, seed {seed}\nsource: {spec.source}; licence: {spec.licence}"),
        highlight=False,
    )
    for i in range(len(batch)):
        console.rule(f"example {i}")
        _field("input: ", task.decode(batch.tokens[i].tolist()))
        _field("target:", task.describe_target(batch, i))
        for key, values in batch.meta.items():
            value = values[i]
            if hasattr(value, "tolist"):
                value = value.tolist()
            if isinstance(value, list):
                value = [v for v in value if v != -1] if all(isinstance(v, int) for v in value) else value
                if len(value) > 40:
                    value = f"{value[:40]} … ({len(value)} values)"
            _field(f"{key}:", str(value))


def _field(name: str, value: str) -> None:
    """One line of an example: its name dimmed, then the value as it is."""
    console.print(Text.assemble((name, "dim"), " ", value), highlight=False, soft_wrap=True)


def check_show_length(task: Task, label: str, seq_len: int) -> None:
    """--seq-len within what the task can be built at (as `bench run` checks its --lengths), and
    within MAX_SHOWN for a task with no maximum of its own: one line before any example
    is generated."""
    task.check_length(seq_len, flag="--seq-len", label=label)
    if task.spec.max_seq_len is None and seq_len > MAX_SHOWN:
        raise AttnbenchError(
            f"--seq-len: {seq_len} is more than show-task prints (at most {MAX_SHOWN} tokens an example)"
        )
