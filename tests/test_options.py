"""Typed options and the `name(opt=value),…` selection parser, including a hypothesis fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.errors import AttnbenchError, OptionError
from attnbench.options import Option, resolve_options
from attnbench.selection import Selected, parse_selection
from attnbench.tasks.base import TASKS
from attnbench.variants.base import VARIANTS

WINDOW = Option("window", int, 128, minimum=1)


def select(text: str) -> list[Selected]:
    return parse_selection(text, VARIANTS, lambda n: VARIANTS[n].spec.options)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"window": -3}, "local: window must be a positive int, got -3"),
        ({"window": "abc"}, "local: window must be a positive int, got 'abc'"),
        ({"window": True}, "local: window must be a positive int, got True"),
        ({"windw": 3}, "local: unknown option 'windw'; did you mean 'window'?"),
    ],
)
def test_bad_options_say_what_is_wrong(given, message):
    with pytest.raises(OptionError) as info:
        resolve_options("local", (WINDOW,), given)
    assert str(info.value).startswith(message)


def test_options_on_a_component_that_takes_none():
    with pytest.raises(OptionError, match="multi-head: takes no options, got 'window'"):
        resolve_options("multi-head", (), {"window": 3})


def test_defaults_fill_in_and_types_widen():
    scale = Option("scale", float, 1.0, minimum=0)
    assert resolve_options("x", (WINDOW, scale), {"scale": 2}) == {"window": 128, "scale": 2.0}
    assert Option("flag", bool, False).parse("yes", "x") is True
    assert Option("mode", str, "a", choices=("a", "b")).describe() == "one of a, b"


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e400"])
def test_float_options_must_be_finite(text):
    scale = Option("scale", float, 1.0)  # no bounds: before, nan and inf went through to the kernel
    with pytest.raises(OptionError, match=r"^x: scale must be a finite float, got (nan|inf|-inf)$"):
        scale.parse(text, "x")
    with pytest.raises(OptionError, match=r"^x: scale must be a finite float, got nan$"):
        Option("scale", float, 1.0, minimum=0, maximum=2).validate(float("nan"), "x")
    assert scale.parse("-1e300", "x") == -1e300


def test_selection_with_inline_options_aliases_and_all():
    assert select("local(window=64), linear-attention") == [Selected("local", {"window": 64}), Selected("linear")]
    assert [s.name for s in select("all")] == VARIANTS.names()
    assert [s.name for s in select("l*")] == ["linear", "local"]
    assert select("local(window=16)")[0].label == "local(window=16)"
    assert select("linear,linear") == [Selected("linear")]  # duplicates count once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty list"),
        ("local,,linear", "empty name"),
        ("local(window=64", "missing ')'"),
        ("local)window", "unbalanced ')'"),
        ("local((window=3))", "nested parentheses in 'local((window=3))'"),  # a second level
        ("local(window=(3))", "nested parentheses in 'local(window=(3))'"),  # inside a value
        ("local(window=3))", "unbalanced ')'"),
        ("local(window)", "expected name=value"),
        ("local(window=1,window=2)", "given twice"),
        ("local(window=0)", "local: window must be a positive int, got 0"),
        ("local(window=abc)", "local: window must be a positive int, got 'abc'"),
        ("multi-head(window=4)", "multi-head: takes no options"),
        ("lcoal", "did you mean 'local'"),
        ("zz*", "no variant matches"),
        ("all(window=3)", "options need a single name"),
        ("local(window=4,,kernel=eager)", "expected name=value in 'local(window=4,,kernel=eager)', got ''"),
        ("local(window='4)", "unclosed '"),
        ("local(window=4,kernel)", "local: window must be a positive int, got '4,kernel'"),  # kernel continued it
    ],
)
def test_bad_selections_fail_with_one_clear_line(text, message):
    with pytest.raises(AttnbenchError) as info:
        select(text)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("distance(distances=8,32,128)", {"distances": "8,32,128"}),  # a part without '=' continues the value
        ("distance(distances=8,32, num_filler=3)", {"distances": "8,32", "num_filler": 3}),
        ("distance(distances='8,32')", {"distances": "8,32"}),
        ('text-cls(source="runs (old)/a,b.csv")', {"source": "runs (old)/a,b.csv"}),
        ("text-cls(source=o'brien.csv)", {"source": "o'brien.csv"}),  # a quote inside a value is text
        ("text-cls(source='it''s (1).csv')", {"source": "it's (1).csv"}),  # a doubled quote in a quoted value
        ("""text-cls(source='a"b''c,d.csv')""", {"source": """a"b'c,d.csv"""}),  # both kinds: still parses back
        ("text-cls(source=\"'q'\")", {"source": "'q'"}),  # the value's own quotes stay
        ("listops(path='')", {"path": ""}),
        ("""text-cls(source="k='v.csv")""", {"source": "k='v.csv"}),  # '=' then a quote, inside: quoted in the label
    ],
)
def test_an_option_value_may_hold_commas_or_be_quoted_and_its_label_parses_back(text, options):
    (task,) = parse_selection(text, TASKS, lambda n: TASKS[n].spec.options, what="--tasks")
    assert {k: task.options[k] for k in options} == options
    (again,) = parse_selection(task.label, TASKS, lambda n: TASKS[n].spec.options, what="--tasks")
    assert again == task


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("local(window=)lin,ear*-_ 0123abc'\"")), max_size=40) | st.text(max_size=30))
def test_any_string_gives_a_selection_or_one_clear_error(text):
    try:
        result = select(text)
    except AttnbenchError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert result and all(s.name in VARIANTS.names() for s in result)


def test_a_path_options_keywords_are_a_tuple_of_names():
    from attnbench.options import Option, names_a_path

    with pytest.raises(TypeError, match=r"option 'corpus': keywords must be a tuple of str, got 'builtin'"):
        Option("corpus", str, "builtin", path=True, keywords="builtin")  # matched letter by letter, before
    corpus = Option("corpus", str, "builtin", path=True, keywords=("builtin",))
    assert not names_a_path(corpus, "builtin")
    assert Option("corpus", str, "builtin", path=True, keywords=["builtin"]).keywords == ("builtin",)  # as choices
