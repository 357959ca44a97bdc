"""Any text given to bench run's list flags yields a valid grid or one clear line (hypothesis)."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.cli_run import parse_ints
from attnbench.errors import AttnbenchError
from attnbench.runner.sweep import SweepRequest, plan_sweep

NAMEISH = st.text(alphabet=string.ascii_letters + string.digits + "-_(),=*? .'\"[]", max_size=40)
ANY = st.one_of(NAMEISH, st.text(max_size=30))


def one_line(exc: AttnbenchError) -> bool:
    return bool(str(exc)) and "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(variants=ANY, tasks=ANY)
def test_variant_and_task_lists(variants: str, tasks: str) -> None:
    try:
        sweep = plan_sweep(SweepRequest(profile="smoke", variants=variants, tasks=tasks, kinds=("accuracy",)))
    except AttnbenchError as exc:
        assert one_line(exc), str(exc)
    else:
        assert sweep.cells and len({c.key for c in sweep.cells}) == len(sweep.cells)


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(alphabet="0123456789,- .e+x", max_size=20), st.text(max_size=20)))
def test_int_lists(text: str) -> None:
    try:
        values = parse_ints("--lengths", text)
    except AttnbenchError as exc:
        assert one_line(exc), str(exc)
        return
    try:
        sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="copy", lengths=values))
    except AttnbenchError as exc:
        assert one_line(exc), str(exc)
    else:
        assert {c.seq_len for c in sweep.cells if c.kind == "accuracy"} == set(values)
        assert len({c.key for c in sweep.cells}) == len(sweep.cells)  # a repeated length is one cell
