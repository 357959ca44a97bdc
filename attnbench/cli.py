"""The `bench` command line: `bench ls`, `bench check` (and, as they land, run/report/plot)."""

from __future__ import annotations

import contextlib
import difflib
import errno
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import attnbench
from attnbench.errors import AttnbenchError, Terminated
from attnbench.plugins import import_plugin
from attnbench.runner.streams import Outliving, devnull_if_closed
from attnbench.selection import is_glob, parse_selection, unloaded_matching
from attnbench.variants.base import VARIANTS
from attnbench.variants.check import CHECKS, FAIL, PASS, CheckResult, iter_checks, summary

devnull_if_closed(1, "stdout")
devnull_if_closed(2, "stderr")
# Neither console reads rich markup or emoji codes in what it prints: the text it shows comes from
# users, plugins and data (file names, option values, a speech's "[see APP Note]", ":smile:"), and
# would be cut, restyled or raise a MarkupError. A line that wants a style says so with
# `markup=True` and escapes what it quotes, or is built as `rich.text.Text`.
console = Console(width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


class BenchGroup(click.Group):
    """A click group whose unknown commands get a did-you-mean."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise click.UsageError(f"no such command {name!r}{hint} (see bench --help)")
        return super().resolve_command(ctx, args)


class NonEmptyPath(click.Path):
    """A path whose empty value is refused by name, not read as the current directory (`hint`:
    what to give instead)."""

    def __init__(self, hint: str, **options) -> None:
        super().__init__(**options)
        self.hint = hint

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail(f"empty path; {self.hint}", param, ctx)
        return super().convert(value, param, ctx)


class RunPath(NonEmptyPath):
    """A run directory argument: an empty one is refused by name (as `--out ''` is), not read as
    the current directory, which then "is not an attnbench run"."""

    def __init__(self) -> None:
        super().__init__("name a run directory, e.g. results/runs/20261127-101500-quick", path_type=Path)


class Choice(click.Choice):
    """`click.Choice` whose refusal adds a did-you-mean ('variant' → 'variants'), as unknown
    commands and registry names get one."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            close = difflib.get_close_matches(str(value).lower(), [str(c) for c in self.choices], n=1)
            if close:
                exc.message = f"{exc.message.rstrip('.')}; did you mean {close[0]!r}?"
            raise


class OptionalArgument(click.Argument):
    """A positional argument that may be left out: shown as [NAME] in the usage line, named NAME
    (no brackets) where a bad value is refused."""

    def get_error_hint(self, ctx) -> str:
        return f"'{self.name.upper()}'"


def plugin_option(func):
    """`--plugin MOD` (repeatable): import a module that registers components before anything runs."""

    def load(ctx, param, values):
        for target in values:
            import_plugin(target)
        ctx.meta["attnbench.plugins"] = tuple(values)  # worker processes import them too
        return values

    return click.option(
        "--plugin",
        "plugins",
        multiple=True,
        callback=load,
        expose_value=False,
        is_eager=True,
        metavar="MOD",
        help="Import MOD (a module name, a .py file, or DIR/MODULE: that module as found in DIR) "
             "that registers variants or tasks.",
    )(func)


def resolve_device(device: str) -> str:
    """`auto` → cuda when available, else cpu; `cuda` without CUDA is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AttnbenchError(
            f"--device cuda: CUDA is not available (torch {torch.__version__}); use --device cpu"
        )
    return device


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnbench", prog_name="attnbench")
def cli() -> None:
    """attnbench: a pluggable benchmark suite for attention mechanisms.

    \b
    Examples:
      bench ls variants            # every registered attention variant
      bench ls variants 'lin*'     # glob over names and aliases
      bench check --variants all   # contract + reference checks, PASS/FAIL table
    """


@cli.command("ls")
@click.argument(
    "what", cls=OptionalArgument, type=Choice(["variants", "tasks", "profiles"]), default="variants", metavar="[WHAT]"
)
@click.argument("pattern", required=False)
@plugin_option
def ls_command(what: str, pattern: str | None) -> None:
    """List registered variants, tasks or profiles as a table (WHAT: variants | tasks | profiles;
    default variants).

    \b
    Examples:
      bench ls variants
      bench ls variants 'lin*'
      bench ls tasks
      bench ls profiles
      bench ls variants --plugin my_attention

    With PATTERN, each matching variant's or task's options follow: what each accepts, its
    default and what it does.
    """
    from attnbench.cli_tasks import profiles_table, tasks_table
    from attnbench.tasks.base import TASKS

    from attnbench.runner.profiles import PROFILES

    make = {"variants": variants_table, "tasks": tasks_table, "profiles": profiles_table}[what]
    table, found = make(pattern)
    if pattern is not None and not found:  # the error alone: an empty table on stdout would read as a result
        registry = {"variants": VARIANTS, "tasks": TASKS, "profiles": PROFILES}[what]
        if "(" in pattern or "," in pattern:  # options or a list, as --variants takes them
            name = pattern.split(",")[0].partition("(")[0].strip()
            hint = "; bench ls takes one name or glob, without options" + (
                f": {name!r}" if name and registry.entries(name) else registry.close_hint(name) if name else "")
        else:  # a misspelt name: the closest
            hint = registry.close_hint(pattern) if pattern.strip() and not is_glob(pattern) else ""
        raise AttnbenchError(f"no {what[:-1]} matches {pattern!r}{hint} (bench ls {what} lists all)")
    console.print(table)
    if pattern is not None and what != "profiles":  # narrowed down: what each option means too
        registry = VARIANTS if what == "variants" else TASKS
        details = options_table(registry.entries(pattern))
        if details.row_count:
            console.print(details)


def options_table(entries) -> Table:
    """Each option of `entries` (registry entries of variants or tasks): what it accepts, its
    default and what it does."""
    table = Table(title="options (NAME(option=value,...))")
    for column in ("name", "option", "accepts", "default", "what it does"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        for option in entry.obj.spec.options:
            cells = (entry.name, option.name, option.describe(), repr(option.default), option.help or "-")
            table.add_row(*cells)
    return table


def variants_table(pattern: str | None) -> tuple[Table, int]:
    entries = VARIANTS.entries(pattern)
    table = Table(title="attention variants" + (f" matching {pattern!r}" if pattern else ""))
    for column in ("name", "aliases", "complexity", "capabilities", "options"):
        table.add_column(column, overflow="fold")
    table.add_column("origin", no_wrap=True, min_width=max([6, *(len(e.origin) for e in entries)]))
    for entry in entries:
        spec = entry.obj.spec
        options = ", ".join(f"{o.name}: {o.type.__name__} = {o.default}" for o in spec.options)
        table.add_row(
            entry.name,
            ", ".join(entry.aliases) or "-",
            spec.complexity,
            " ".join(spec.capabilities()) or "-",
            options or "-",
            entry.origin,
        )
    return table, len(entries)


@cli.command("check")
@click.option("--variants", "variants", default="all", show_default=True,
              help="Comma-separated names with optional options, e.g. 'local(window=16),linear'.")
@click.option("--device", type=Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--checks", "checks", default="all", show_default=True,
              help=f"Comma-separated subset of: {', '.join(CHECKS)}.")
@plugin_option
def check_command(variants: str, device: str, checks: str) -> int:
    """Run the contract and reference checks on variants; exit 1 if any fails.

    \b
    Examples:
      bench check
      bench check --variants 'local(window=16)' --checks reference,causal
      bench check --variants cosine-demo --plugin my_attention.py   # README's plugin example
    """
    device = resolve_device(device)
    given = [c.strip() for c in checks.split(",")]
    if not any(given):
        raise AttnbenchError(f"--checks: empty list (give names, or 'all'; known: {', '.join(CHECKS)})")
    if "" in given:
        raise AttnbenchError(f"--checks: empty name in {checks!r}")
    names = list(CHECKS) if "all" in given else list(dict.fromkeys(given))  # 'all' beside names: all
    for name in names:
        if name not in CHECKS:
            close = difflib.get_close_matches(name, list(CHECKS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttnbenchError(f"--checks: unknown check {name!r}{hint} (known: {', '.join(CHECKS)})")
    selected = parse_selection(variants, VARIANTS, lambda n: VARIANTS[n].spec.options)
    # `all` or a glob means every installed variant it matches: one whose plugin failed to load fails its
    # check too (a plugin package's CI running `bench check` must not pass on a plugin that never loaded)
    unloaded = unloaded_matching(variants, VARIANTS)
    with outliving_a_closed_stdout("the check"):  # `| head`: exit 1 says a check failed, nothing else
        return _run_checks(selected, device, names, unloaded)


def _run_checks(selected, device: str, names: list[str], unloaded: dict[str, str]) -> int:
    """`bench check`'s table of `names` on each selected variant, a progress line per check on
    stderr; 1 if any failed. `unloaded`: entry point → why its plugin did not load, each a FAIL."""
    table = Table(title=f"bench check on {device}")
    for column in ("variant", "check", "result", "detail"):
        table.add_column(column)
    results = [CheckResult(name, "load", FAIL, f"its plugin failed to load: {why}") for name, why in unloaded.items()]
    for result in results:
        table.add_row(result.variant, result.check, Text(FAIL, style="bold red"), result.detail)
    planned = len(results) + len(selected) * len(names)
    for choice in selected:
        start = time.perf_counter()
        for result in iter_checks(choice.name, choice.options, device, names):
            style = {PASS: "green", FAIL: "bold red"}.get(result.status, "yellow")
            table.add_row(choice.label, result.check, Text(result.status, style=style), result.detail)
            results.append(result)
            if result.check == "build":  # not built: its one row stands for all its checks
                planned -= len(names) - 1
            # progress, one line per check as it ends (stderr: the table stays the output)
            now = time.perf_counter()
            err_console.print(
                f"[{len(results)}/{planned}] {escape(choice.label)} {result.check}: [{style}]{result.status}[/{style}] "
                f"({now - start:.1f} s)", highlight=False, markup=True,
            )
            start = now
    console.print(table)
    console.print(summary(results))
    return 1 if any(result.status == FAIL for result in results) else 0


def _on_sigterm(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM (`kill`, `timeout`, a job scheduler) raises `Terminated` while a command runs,
    instead of ending the process on the spot, which left a subprocess worker running its cell.
    (Before this, while torch imports, `attnbench/__init__.py` catches it for the console script.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# click >= 8.2 raises this for a bare `bench`; 8.1 printed the help itself and exited 0
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `bench` script: bad input → one line on stderr and exit code 2."""
    attnbench.restore_sigint()  # Ctrl-C from here on unwinds the command (click: Abort, exit 130)
    try:
        with _one_line_warnings(), _sigterm_unwinds():
            code = cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.exceptions.Abort:
        click.echo("bench: aborted", err=True)
        code = 130
    except Terminated:
        click.echo("bench: terminated", err=True)
        code = 128 + signal.SIGTERM
    except _NO_ARGS_IS_HELP as exc:  # a bare `bench`: its help, as `bench --help` gives it
        click.echo(exc.format_message())
        code = 0
    except click.UsageError as exc:
        click.echo(f"bench: error: {exc.format_message()}", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"bench: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except AttnbenchError as exc:
        click.echo(f"bench: error: {exc}", err=True)
        code = getattr(exc, "exit_code", 2)  # 2: bad input; 1: a run that stopped midway (disk full)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:  # a path given too long for the file system is bad input
            raise
        click.echo(f"bench: error: {exc.filename}: {exc.strerror}", err=True)
        code = 2
    if code in (130, 128 + signal.SIGTERM) and attnbench._run_as_command():  # never a host program's process
        from attnbench.runner import ray_executor

        if ray_executor.must_exit_at_once():
            ray_executor.exit_at_once(code)
    sys.exit(code if isinstance(code, int) else 0)


@contextlib.contextmanager
def outliving_a_closed_stdout(what: str):
    """Within: a closed stdout (its pipe's reader gone) drops the output, not the command, and says
    so once on stderr (runner/streams.py `Outliving`), where click would end the command with exit 1
    and no word."""
    def said(stderr_open: bool) -> None:
        if stderr_open:  # `2>&1 | head`: stderr went with it, and nobody is left to tell
            click.echo(f"bench: the output's reader closed; {what} goes on without printing", err=True)

    previous = sys.stdout, sys.stderr
    # stderr too: a cell's own print to it (a warning, a plugin's line) may meet the closed pipe first
    sys.stdout, sys.stderr = Outliving(previous[0], said), Outliving(previous[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = previous


@contextlib.contextmanager
def _one_line_warnings():
    """Show each distinct warning of ours (a torn line in cells.jsonl, a broken plugin, rows a data
    source left out) once, as one line."""
    from attnbench.registry import PluginWarning
    from attnbench.runner.store import StoreWarning
    from attnbench.runner.sweep import SweepWarning
    from attnbench.tasks.files import DataWarning

    ours = (StoreWarning, PluginWarning, DataWarning, SweepWarning)
    shown: set[str] = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, ours):
            return default(message, category, filename, lineno, file, line)
        text = f"bench: warning: {message}"
        if text not in shown:
            shown.add(text)
            click.echo(text, err=True)

    with warnings.catch_warnings():
        for category in ours:  # `shown` dedups, per message rather than per call site
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


from attnbench import cli_attention, cli_perf, cli_plot, cli_report, cli_run, cli_tasks  # noqa: E402,F401,I001

if __name__ == "__main__":
    main()
