"""Parse a command-line selection such as ``all`` or ``local(window=64),linear`` against a registry."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attnbench.errors import AttnbenchError
from attnbench.options import Option, resolve_options
from attnbench.registry import ALL, Registry, normalize

_NAME = re.compile(r"^[A-Za-z0-9_.\-*?\[\]]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Selected:
    """One selected component: canonical name and resolved options (defaults filled in)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`name(opt=value, …)` with the options given explicitly, `name` when none; a value with a
        comma, a parenthesis or a quote in it is quoted, so the label parses back to the same options."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={_quoted(v)}' for k, v in self.options.items())})"


QUOTES = "'\""
_SPECIAL = set(",()")


def _quoted(value: Any) -> str:
    """`value` as a label writes it: quoted when it is empty, holds a comma or a parenthesis,
    starts with a quote, or holds `='` or `="` (which the parser reads as a quoted value's start);
    a quote inside is doubled, so that the label parses back to the same value."""
    text = str(value)
    opens = any(f"={q}" in text for q in QUOTES)
    if text and not set(text) & _SPECIAL and not text.startswith(tuple(QUOTES)) and not opens:
        return text
    quote = "'" if text.count("'") <= text.count('"') else '"'
    return quote + text.replace(quote, quote * 2) + quote


def split_top_level(text: str, what: str, *, nested: bool = False) -> list[str]:
    """Split on commas outside parentheses and quoted values: a value that starts with a quote
    (`source='a,(b).csv'`) runs to its closing quote, a doubled quote inside it being one quote;
    a quote anywhere else is plain text (`o'brien.csv`). Unbalanced parentheses or an unclosed quote
    are an error. With `nested`, a parenthesis outside a quoted value is an error (option values)."""
    items, depth, current, quote, i = [], 0, [], None, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote and text[i + 1 : i + 2] == quote:  # a doubled quote: one quote, still inside
                current.append(char)
                i += 1
            elif char == quote:
                quote = None
        elif char in QUOTES and "".join(current).rstrip().endswith("="):
            quote = char
        elif char in "()" and (nested or (char == "(" and depth > 0)):  # inside a value, or a second level
            raise AttnbenchError(f"{what}: nested parentheses in {text!r} (quote a value that has them: 'a(1).csv')")
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise AttnbenchError(f"{what}: unbalanced ')' in {text!r}")
        elif char == "," and depth == 0:
            items.append("".join(current))
            current, i = [], i + 1
            continue
        current.append(char)
        i += 1
    if quote:
        raise AttnbenchError(f"{what}: unclosed {quote} in {text!r}")
    if depth:
        raise AttnbenchError(f"{what}: missing ')' in {text!r}")
    items.append("".join(current))
    return [item.strip() for item in items]


def parse_selection(
    text: str,
    registry: Registry,
    options_of: Callable[[str], tuple[Option, ...]],
    *,
    what: str = "--variants",
) -> list[Selected]:
    """`all`, a glob, or names with inline options → validated selections, in the order given.

    Options given inline are validated with the component's declared types; options not given
    are left out of `Selected.options` (the component's defaults apply when it is built).
    """
    if not isinstance(text, str) or not text.strip():
        raise AttnbenchError(f"{what}: empty list (give names, or 'all')")
    selected: list[Selected] = []
    for item in split_top_level(text, what):
        if not item:
            raise AttnbenchError(f"{what}: empty name in {text!r}")
        name, _, rest = item.partition("(")
        name = name.strip()
        if not _NAME.match(name):
            raise AttnbenchError(f"{what}: {name!r} is not a valid name")
        if rest and not rest.rstrip().endswith(")"):
            raise AttnbenchError(f"{what}: text after ')' in {item!r}")
        given = _parse_options(rest.rstrip()[:-1] if rest else "", item, what)
        if name == ALL or is_glob(name):
            matches = registry.names() if name == ALL else registry.names(name)
            if not matches:
                unloaded = unloaded_matching(name, registry)
                why = "".join(f"; {n!r} matches it, but its plugin failed to load: {e}" for n, e in unloaded.items())
                raise AttnbenchError(f"{what}: no {registry.kind} matches {name!r}{why}")
            if given:
                raise AttnbenchError(f"{what}: options need a single name, not {name!r}")
            selected.extend(Selected(n) for n in matches)
            continue
        canonical = registry.resolve(name)
        resolved = resolve_options(canonical, options_of(canonical), given, from_text=True)
        selected.append(Selected(canonical, {k: resolved[k] for k in given}))
    unique: dict[str, Selected] = {}
    for s in selected:  # the same selection twice counts once
        unique.setdefault(s.label, s)
    return list(unique.values())


def is_glob(name: str) -> bool:
    """Whether a selected name is a glob (`lin*`, `mha-?`, `[ld]*`) rather than one name."""
    return any(c in name for c in "*?[")


def unloaded_matching(text: str, registry: Registry) -> dict[str, str]:
    """The installed plugins that failed to load (`registry.plugin_errors`: name → why) that `text`
    selects by `all` or a glob (`*`, `mha-*`): what a selection of every matching component
    lacks. A name given in full is not among them: it is an error of its own (unavailable)."""
    errors = registry.plugin_errors
    patterns = [item.partition("(")[0].strip() for item in split_top_level(text, registry.kind)]
    if any(normalize(p) == ALL for p in patterns):
        return errors
    globs = [normalize(p) for p in patterns if is_glob(p)]
    return {name: why for name, why in errors.items() if any(fnmatch.fnmatchcase(normalize(name), g) for g in globs)}


def parse_one(
    text: str, registry: Registry, options_of: Callable[[str], tuple[Option, ...]], *, what: str
) -> Selected:
    """Exactly one name with its inline options ('additive(heads=2)'), where an option takes one
    component (`--cross`, `bench attention --variant`): a glob, a list or 'all' is one line."""
    if not text.strip():
        raise AttnbenchError(f"{what}: empty; give one {registry.kind}")
    selected = parse_selection(text, registry, options_of, what=what)
    if len(selected) != 1 or any(c in text.partition("(")[0] for c in "*?[,") or text.strip() == ALL:
        raise AttnbenchError(f"{what}: give one {registry.kind}, got {text!r}")
    return selected[0]


def label_parts(label: str) -> tuple[str, dict[str, str]] | None:
    """A label as `Selected.label` or a cell writes it → (name, {option: value as text}), read without
    a registry (quotes removed, values not typed); None for text that is no label."""
    name, _, rest = label.partition("(")
    if not _NAME.match(name.strip()) or (rest and not rest.rstrip().endswith(")")):
        return None
    try:
        return name.strip(), _parse_options(rest.rstrip()[:-1] if rest else "", label, "label")
    except AttnbenchError:
        return None


def _parse_options(body: str, item: str, what: str) -> dict[str, str]:
    """'window=4, kernel=eager' → {'window': '4', 'kernel': 'eager'}. A value may hold commas, as
    in distances=8,32,128 (a part without '=' continues the value before it) or quoted,
    distances='8,32,128'; quotes around a value are removed."""
    given: dict[str, str] = {}
    if not body.strip():
        return given
    key = None
    for part in split_top_level(body, what, nested=True):
        name, eq, value = part.partition("=")
        if not eq or not _KEY.match(name.strip()):
            if key is None or not part:  # nothing to continue, or an empty part (a,,b)
                raise AttnbenchError(f"{what}: expected name=value in {item!r}, got {part!r}")
            given[key] += "," + part
            continue
        key, value = name.strip(), value.strip()
        if not value:
            raise AttnbenchError(f"{what}: expected name=value in {item!r}, got {part!r}")
        if key in given:
            raise AttnbenchError(f"{what}: option {key!r} given twice in {item!r}")
        given[key] = value
    return {k: _unquoted(v) for k, v in given.items()}


def _unquoted(value: str) -> str:
    """A quoted value without its quotes, each doubled quote inside it one quote; others as given."""
    if len(value) >= 2 and value[0] in QUOTES and value[-1] == value[0]:
        return value[1:-1].replace(value[0] * 2, value[0])
    return value
