"""The generic Registry: names, aliases, globs, did-you-mean, duplicates, lazy entry-point plugins."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from attnbench.errors import AttnbenchError, PluginError, UnknownNameError
from attnbench.registry import PluginWarning, Registry, check_spec_class, class_or_module


def make() -> Registry[str]:
    reg: Registry[str] = Registry("widget")
    reg.register("linear", "L", aliases=("lin",))
    reg.register("local", "W", aliases=("sliding-window",))
    reg.register("multi-head", "M")
    return reg


def test_lookup_by_name_alias_case_and_underscores():
    reg = make()
    assert reg["linear"] == reg["lin"] == reg["LINEAR"] == "L"
    assert reg.resolve("sliding_window") == "local"
    assert reg.get("multi_head").name == "multi-head"
    assert "Lin" in reg and "nope" not in reg


def test_glob_matches_names_and_aliases_sorted():
    reg = make()
    assert reg.names() == ["linear", "local", "multi-head"]
    assert reg.names("l*") == ["linear", "local"]
    assert reg.names("sliding*") == ["local"]
    assert reg.names("z*") == []


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        make().resolve("lineer")
    message = str(info.value)
    assert "unknown widget 'lineer'" in message and "did you mean 'linear'" in message
    assert "known: linear, local, multi-head" in message


def test_unknown_name_without_close_match_lists_known_names():
    message = str(pytest.raises(UnknownNameError, make().resolve, "qqqqqq").value)
    assert "did you mean" not in message and "known:" in message


def test_a_name_or_alias_is_taken_once():
    reg = make()
    with pytest.raises(AttnbenchError, match="already taken by 'linear'"):
        reg.register("lin", "other")
    with pytest.raises(AttnbenchError, match="already taken"):
        reg.register("new", "other", aliases=("local",))
    with pytest.raises(AttnbenchError, match="non-empty"):
        reg.register("  ", "x")


@pytest.mark.parametrize("name", ["a,b", "bad(name", "x=1", "lin*", "two words", "tab\tname"])
def test_a_name_no_selection_could_name_is_refused(name):
    with pytest.raises(AttnbenchError, match="no selection could name it"):
        make().register(name, "x")
    with pytest.raises(AttnbenchError, match="no selection could name it"):
        make().register("fine-name", "x", aliases=(name,))


@pytest.mark.parametrize("name", ["all", "ALL", "All"])
def test_the_name_all_is_refused_since_it_selects_every_entry(name):
    for names in ((name, ()), ("fine-name", (name,))):
        with pytest.raises(AttnbenchError, match="'all' selects every registered widget, so no selection could name"):
            make().register(names[0], "x", aliases=names[1])


def test_a_variant_option_named_like_build_variant_s_own_arguments_is_refused():
    from attnbench.options import Option
    from attnbench.variants.base import VariantSpec, check_layer_class
    from attnbench.variants.multi_head import MultiHeadAttention

    for reserved in ("d_model", "n_heads"):
        spec = VariantSpec(complexity="n^2", options=(Option(reserved, int, 2),))
        layer = type("Layer", (MultiHeadAttention,), {"spec": spec})
        with pytest.raises(PluginError, match=f"^variant 'mine': option '{reserved}' is reserved"):
            check_layer_class("mine", layer)


def test_temporary_undoes_registrations():
    reg = make()
    with reg.temporary():
        reg.register("extra", "E")
        assert "extra" in reg
    assert "extra" not in reg and reg.names() == ["linear", "local", "multi-head"]


def test_decorator_registers_and_returns_the_object():
    reg = make()

    @reg.decorator("thing", aliases=("t",))
    def thing():
        return 1

    assert reg["t"] is thing and thing() == 1
    assert reg.get("thing").origin.startswith("python:") and reg.get("thing").origin.endswith("test_registry")


def test_entry_points_load_lazily_and_a_broken_one_is_reported(tmp_path, monkeypatch, make_distribution):
    make_distribution(
        tmp_path,
        "widgets-extra",
        {"good": "widgets_good:VALUE", "broken": "widgets_broken:VALUE"},
        {"widgets_good": "VALUE = 'G'\n", "widgets_broken": "raise ImportError('no gizmo here')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[str] = Registry("widget", entry_point_group="attnbench.variants")
    reg.register("core", "C")
    assert reg._plugins_loaded is False  # nothing loaded until the first lookup
    with pytest.warns(PluginWarning, match="'broken' failed to load: ImportError: no gizmo here"):
        names = reg.names()
    assert names == ["core", "good"]
    assert reg.get("good").origin == "plugin:widgets-extra"
    assert "no gizmo here" in reg.plugin_errors["broken"]
    with pytest.raises(PluginError, match="'broken' is unavailable: its plugin failed to load"):
        reg.resolve("broken")
    with pytest.raises(UnknownNameError) as typo:  # before: "a plugin's widget? load it with --plugin MODULE"
        reg.resolve("brokn")
    assert "did you mean 'broken'? its installed plugin failed to load: ImportError: no gizmo here" in str(typo.value)
    with pytest.raises(UnknownNameError) as other:  # a registered name closer than the broken one is the one named
        reg.resolve("gooder")
    assert "did you mean 'good'?" in str(other.value)


# ------------------------------------------------------------------------------ plugin classes
@dataclass(frozen=True)
class GadgetSpec:
    size: str = "small"
    colour: str = "red"


class Gadget:
    spec = GadgetSpec()


def check_gadget(name, obj):
    return check_spec_class("gadget", name, obj, base=Gadget, base_text="a Gadget subclass",
                            spec_type=GadgetSpec, choices={"size": ("small", "big"), "colour": ("red",)})


def test_check_spec_class_accepts_a_valid_class_and_names_what_is_wrong():
    class Good(Gadget):
        spec = GadgetSpec("big")

    class NoSpec(Gadget):
        spec = {"size": "big"}

    class BadColour(Gadget):
        spec = GadgetSpec("small", "blue")

    assert check_gadget("good", Good) is Good
    with pytest.raises(PluginError, match=r"^gadget 'x': 3 is not a Gadget subclass$"):
        check_gadget("x", 3)
    with pytest.raises(PluginError, match=r"^gadget 'y': class .*NoSpec needs a class attribute `spec: GadgetSpec`, found dict$"):
        check_gadget("y", NoSpec)
    with pytest.raises(PluginError, match=r"^gadget 'z': spec.colour must be one of red, got 'blue'$"):
        check_gadget("z", BadColour)


@dataclass(frozen=True)
class ToolSpec:
    size: str = "small"
    teeth: int | None = None
    weight: float = 1.0
    sharp: bool = False
    note: Optional[str] = None  # noqa: UP007  (the typing spelling is read too)
    extra: Any = None


class Tool:
    spec = ToolSpec()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"teeth": "12"}, "spec.teeth must be int | None, got str '12'"),
        ({"teeth": False}, "spec.teeth must be int | None, got bool False"),
        ({"weight": "heavy"}, "spec.weight must be float, got str 'heavy'"),
        ({"sharp": "no"}, "spec.sharp must be bool, got str 'no'"),
        ({"note": 5}, "spec.note must be str | None, got int 5"),
    ],
)
def test_check_spec_class_refuses_a_field_of_the_wrong_type(fields, problem):
    class Bad(Tool):
        spec = ToolSpec(**fields)

    with pytest.raises(PluginError) as refused:
        check_spec_class("tool", "t", Bad, base=Tool, base_text="a Tool subclass", spec_type=ToolSpec, choices={})
    assert str(refused.value) == f"tool 't': class {Bad.__qualname__}: {problem}"


def test_check_spec_class_takes_every_value_its_annotation_allows():
    for fields in ({}, {"teeth": 12, "weight": 2, "sharp": True, "note": "x", "extra": object()}):
        class Good(Tool):
            spec = ToolSpec(**fields)

        assert check_spec_class("tool", "t", Good, base=Tool, base_text="a Tool subclass", spec_type=ToolSpec,
                                choices={}) is Good


def test_class_or_module_registers_nothing_for_a_module_and_checks_a_class():
    adapt = class_or_module(check_gadget)
    assert adapt("mod", types.ModuleType("plugin_module")) is None
    assert adapt("gadget", Gadget) is Gadget
    with pytest.raises(PluginError, match="is not a Gadget subclass"):
        adapt("thing", object)
