"""A plugin author's mistakes, each one clear line: malformed options, a module that registers
nothing, a plugin's name given without --plugin, two files named alike, a broken entry point."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from attnbench import Option, TaskSpec, VariantSpec
from attnbench.errors import PluginError, UnknownNameError
from attnbench.plugins import import_plugin
from attnbench.registry import BUILT_IN, PluginWarning, Registry
from attnbench.tasks.base import TASKS, GeneratedTask, check_task_class
from attnbench.variants.base import VARIANTS, check_layer_class
from attnbench.variants.multi_head import MultiHeadAttention
from support import one_error_line

FAULTS = Path(__file__).parent / "fixtures" / "fault_variants.py"

REGISTERS = """
from attnbench import register_variant
from attnbench.variants.multi_head import MultiHeadAttention

@register_variant("mine")
class Mine(MultiHeadAttention):
    pass
"""

NOT_TUPLE = """
from attnbench import Option, VariantSpec, register_variant
from attnbench.variants.multi_head import MultiHeadAttention

@register_variant("temp-softmax")
class TempSoftmax(MultiHeadAttention):
    spec = VariantSpec(complexity="n^2", options=Option("tau", float, 1.0))
"""

FORGOT_TO_REGISTER = """
from attnbench import VariantSpec
from attnbench.variants.multi_head import MultiHeadAttention

class TempSoftmax(MultiHeadAttention):
    spec = VariantSpec(complexity="n^2")
"""


@pytest.fixture(autouse=True)
def _isolated(sandbox):
    """Registrations (variants and tasks) made by a test end with it."""
    with TASKS.temporary():
        yield


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# ---------------------------------------------------------------------------- 1. malformed options
def variant_with(options):
    return check_layer_class("temp", type("Temp", (MultiHeadAttention,), {"spec": VariantSpec("n^2", options=options)}))


def task_with(options):
    spec = TaskSpec(kind="classify", metric="accuracy", options=options)
    return check_task_class("temp", type("Temp", (GeneratedTask,), {"spec": spec}))


@pytest.mark.parametrize(("kind", "make"), [("variant", variant_with), ("task", task_with)])
@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (Option("tau", float, 1.0), "spec.options must be a tuple of Option, got one Option 'tau'; "
                                    "write options=(Option(...),)"),
        ({"temperature": 1.0}, "spec.options must be a tuple of Option, got dict; write options=(Option(...),)"),
        ([Option("tau", float, 1.0)], "spec.options must be a tuple of Option, got list; write options=(Option(...),)"),
        (("temperature",), "spec.options[0] must be an Option, got str 'temperature'"),
        ((Option("tau", float, 1.0), Option("tau", float, 2.0)), "spec.options declares 'tau' twice"),
        ((Option("my-tau", float, 1.0),), "spec.options[0] has name 'my-tau'; an option's name is an identifier"),
        ((Option("temperature", int, 1.5, minimum=1),),
         "the default of option 'temperature' must be a positive int, got 1.5"),
        ((Option("temperature", float, "1.0"),), "the default of option 'temperature' must be a float, got '1.0'"),
        ((Option("temperature", float, None),), "the default of option 'temperature' must be a float, got None"),
        ((Option("window", int, 0, minimum=1, maximum=8),), "the default of option 'window' must be a positive int "
                                                             "<= 8, got 0"),
    ],
    ids=["bare-option", "dict", "list", "not-an-option", "twice", "bad-name", "int-default", "str-default",
         "none-default", "out-of-range"],
)
def test_malformed_options_are_the_plugins_error(kind, make, options, problem):
    with pytest.raises(PluginError) as refused:
        make(options)
    assert str(refused.value) == f"{kind} 'temp': {problem}"


@pytest.mark.parametrize("make", [variant_with, task_with])
def test_valid_options_pass(make):
    options = (Option("window", int, None, nullable=True, minimum=1), Option("scale", float, 1),
               Option("on", bool, True))
    assert make(options).spec.options == options
    assert make(()).spec.options == ()


# ---------------------------------------------------------------------------- 1b. spec fields of the wrong type
@pytest.mark.parametrize(
    ("kind", "fields", "problem"),
    [
        ("task", {"max_seq_len": "64"}, "spec.max_seq_len must be int | None, got str '64'"),
        ("task", {"max_seq_len": True}, "spec.max_seq_len must be int | None, got bool True"),
        ("task", {"max_seq_len": 64.0}, "spec.max_seq_len must be int | None, got float 64.0"),
        ("task", {"has_distance": "yes"}, "spec.has_distance must be bool, got str 'yes'"),
        ("task", {"description": None}, "spec.description must be str, got NoneType None"),
        ("task", {"licence": ["MIT"] * 20}, "spec.licence must be str, got list ['MIT', 'MIT', 'MIT', 'MIT', "
                                             "'MIT', 'MIT', 'MIT', 'MIT', ..."),  # a long value cut
        ("variant", {"supports_causal": "no"}, "spec.supports_causal must be bool, got str 'no'"),
        ("variant", {"returns_weights": 0}, "spec.returns_weights must be bool, got int 0"),
        ("variant", {"own_positions": None}, "spec.own_positions must be bool, got NoneType None"),
        ("variant", {"description": 3}, "spec.description must be str, got int 3"),
    ],
)
def test_a_spec_field_of_the_wrong_type_is_refused_at_registration(kind, fields, problem):
    """Before: registered, then a TypeError traceback in show-task / run, or a variant listed as
    causal-capable for supports_causal='no'."""
    if kind == "task":
        spec, base, check = TaskSpec(kind="classify", metric="accuracy", **fields), GeneratedTask, check_task_class
    else:
        spec, base, check = VariantSpec("n^2", **fields), MultiHeadAttention, check_layer_class
    with pytest.raises(PluginError) as refused:
        check("temp", type("Temp", (base,), {"spec": spec}))
    assert str(refused.value) == f"{kind} 'temp': class Temp: {problem}"


def test_every_built_in_spec_has_fields_of_their_types():
    for name in TASKS.names():
        assert check_task_class(name, TASKS[name]) is TASKS[name]
    for name in VARIANTS.names():
        assert check_layer_class(name, VARIANTS[name]) is VARIANTS[name]


def test_a_plugin_file_with_malformed_options_is_one_line(tmp_path, bench_output):
    plugin = write(tmp_path / "opt_e.py", NOT_TUPLE)
    for args in (["ls", "variants"], ["check", "--variants", "temp-softmax"]):
        code, out, err = bench_output(*args, "--plugin", plugin)
        assert code == 2 and out == ""
        assert one_error_line(err) == (
            f"bench: error: --plugin {plugin}: variant 'temp-softmax': spec.options must be a tuple of Option, "
            "got one Option 'tau'; write options=(Option(...),)"
        )


def test_an_installed_plugin_with_malformed_options_breaks_only_itself(
    tmp_path, monkeypatch, sandbox, make_distribution, bench_output
):
    make_distribution(tmp_path, "attn-temp", {"temp-softmax": "attn_temp:TempSoftmax"},
                      {"attn_temp": NOT_TUPLE.replace('@register_variant("temp-softmax")\n', "")})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning) as caught:
        sandbox.load_plugins(reload=True)
    error = ("PluginError: variant 'temp-softmax': spec.options must be a tuple of Option, got one Option 'tau'; "
             "write options=(Option(...),) [entry point 'temp-softmax = attn_temp:TempSoftmax' of attn-temp]")
    assert [str(w.message) for w in caught] == [f"variant plugin 'temp-softmax' failed to load: {error}"]
    code, out, _ = bench_output("ls", "variants")
    assert code == 0 and "multi-head" in out and "temp-softmax" not in out


# ---------------------------------------------------------------------------- 2. registered nothing
def test_a_plugin_that_registers_nothing_warns(tmp_path):
    plugin = write(tmp_path / "noreg.py", FORGOT_TO_REGISTER)
    with pytest.warns(PluginWarning) as caught:
        import_plugin(str(plugin))
    assert [str(w.message) for w in caught] == [
        f"--plugin {plugin} registered no variant or task (a class decorated with @register_variant or @register_task)"
    ]


def test_the_warning_comes_before_the_unknown_name(tmp_path, bench_output):
    plugin = write(tmp_path / "noreg.py", FORGOT_TO_REGISTER)
    code, _, err = bench_output("check", "--variants", "temp-softmax", "--plugin", plugin)
    assert code == 2
    assert err.splitlines()[0] == (
        f"bench: warning: --plugin {plugin} registered no variant or task "
        "(a class decorated with @register_variant or @register_task)"
    )


def test_plugins_that_register_do_not_warn_even_imported_twice(tmp_path, monkeypatch, sandbox, make_distribution):
    plugin = write(tmp_path / "my_attention.py", REGISTERS)
    write(tmp_path / "input_pkg" / "my_module_attention.py", REGISTERS.replace('"mine"', '"mine-too"'))
    (tmp_path / "input_pkg" / "__init__.py").write_text("")
    make_distribution(tmp_path, "attn-input-good", {"good": "attn_input_good:Good"},
                      {"attn_input_good": REGISTERS.replace('@register_variant("mine")\n', "").replace("Mine", "Good")})
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        for _ in range(2):  # as the worker or a resume imports it again
            import_plugin(str(plugin))
            import_plugin(str(FAULTS))
            import_plugin("input_pkg.my_module_attention")  # the second time a cached module, not run again
        sandbox.load_plugins(reload=True)
    assert {"mine", "mine-too", "fault-nan", "good"} <= set(VARIANTS.names())


# ---------------------------------------------------------------------------- 3. the --plugin hint
def widgets(*entries: tuple[str, str]) -> Registry:
    reg = Registry("widget", entry_point_group="attnbench.test-widgets-none")
    for name, origin in entries:
        reg.register(name, object(), origin=origin)
    return reg


@pytest.mark.parametrize(
    ("entries", "name", "hint"),
    [
        ([("softmax", BUILT_IN), ("linear", BUILT_IN)], "temp-softmax",
         "; did you mean 'softmax', or a plugin's widget? load it with --plugin MODULE"),
        ([("softmax", BUILT_IN), ("linear", BUILT_IN)], "lineer", "; did you mean 'linear'?"),  # a typo
        ([("softmax", BUILT_IN), ("linear", "python:my_plugin")], "temp-softmax", "; did you mean 'softmax'?"),
        ([("softmax", BUILT_IN), ("linear", BUILT_IN)], "cosine-demo",
         "; a plugin's widget? load it with --plugin MODULE (or import its module)"),
    ],
    ids=["loose-match", "typo", "plugin-given", "nothing-close"],
)
def test_the_plugin_hint_comes_with_a_loose_did_you_mean(entries, name, hint):
    with pytest.raises(UnknownNameError) as refused:
        widgets(*entries).resolve(name)
    assert str(refused.value) == f"unknown widget {name!r}{hint} (known: linear, softmax)"


def test_a_plugins_variant_without_plugin_gets_the_hint(bench_output):
    code, _, err = bench_output("check", "--variants", "temp-softmax")
    assert code == 2
    assert one_error_line(err) == (
        "bench: error: unknown variant 'temp-softmax'; did you mean 'softmax', or a plugin's variant? "
        f"load it with --plugin MODULE (known: {', '.join(VARIANTS.names())})"
    )


# ---------------------------------------------------------------------------- 4. files named alike
def test_two_files_named_alike_clash_and_one_file_twice_does_not(tmp_path):
    first = write(tmp_path / "a" / "my_attention.py", REGISTERS)
    second = write(tmp_path / "b" / "my_attention.py", REGISTERS)
    import_plugin(str(first))
    import_plugin(str(first))
    import_plugin(str(tmp_path / "b" / ".." / "a" / "my_attention.py"))
    with pytest.raises(PluginError) as refused:
        import_plugin(str(second))
    assert str(refused.value) == (
        f"--plugin {second}: variant name 'mine' is already taken by 'mine' (python:{first})"
    )
    assert VARIANTS.get("mine").origin == f"python:{first}"


# ---------------------------------------------------------------------------- 5. a broken entry point
def test_a_broken_entry_point_names_itself_and_the_plugins_own_line(tmp_path, monkeypatch, sandbox, make_distribution):
    make_distribution(
        tmp_path, "attn-input-broken",
        {"typo": "attn_typo:Layr", "boom": "attn_boom:Layer"},
        {"attn_typo": "Layer = 1\n", "attn_boom": "import math\nraise RuntimeError('no gizmo')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning):
        sandbox.load_plugins(reload=True)
    assert sandbox.plugin_errors == {
        "typo": "AttributeError: module 'attn_typo' has no attribute 'Layr' "
                "[entry point 'typo = attn_typo:Layr' of attn-input-broken]",
        "boom": f"RuntimeError: no gizmo (at {tmp_path / 'attn_boom.py'}:2) "
                "[entry point 'boom = attn_boom:Layer' of attn-input-broken]",
    }
