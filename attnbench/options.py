"""Typed, validated options of a registered component (a variant's `window`, a task's `num_kv_pairs`)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.errors import OptionError

_TYPES = (int, float, bool, str)
# The largest int option accepted when an option declares no maximum of its own: torch's index and
# size arithmetic is int32 in places (CUDA grids, some kernels' offsets) and a Python int past int64
# does not convert to a tensor at all; no window, count or vocabulary here needs more.
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Option:
    """One option: name, type (int | float | bool | str), default, and the values it accepts.

    `minimum` and `maximum` bound ints and floats; an int without a `maximum` is still held to
    INT_MAX, so that a value torch cannot take is refused here rather than deep inside a kernel,
    and a float must be finite (NaN would pass every bound, inf none would catch). `path`: the
    value names a file or folder the task reads, so a sweep records it absolute and checksums it
    (`names_a_path`: any value that exists, but `keywords`, the values that name built-in data).
    """

    name: str
    type: type
    default: Any
    help: str = ""
    minimum: float | None = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    maximum: float | None = None
    path: bool = False  # a file or folder path: a sweep records it absolute (see runner.sweep)
    # a path option's values that name no path (text-cls's 'sotu'); one ending in ':' is a prefix ('hf:')
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of int, float, bool, str")
        if not (isinstance(self.keywords, (tuple, list)) and all(isinstance(k, str) for k in self.keywords)):
            raise TypeError(f"option {self.name!r}: keywords must be a tuple of str, got {self.keywords!r}")
        object.__setattr__(self, "keywords", tuple(self.keywords))  # a list, as choices may be: hashable now

    def describe(self) -> str:
        """What the option accepts, in words: 'a positive int', 'one of fp32, bf16'."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = self.type.__name__
        if self.minimum is None:
            words = f"{'an' if kind == 'int' else 'a'} {kind}"
        elif self.minimum == 1 and self.type is int:
            words = "a positive int"
        elif self.minimum == 0:
            words = f"a non-negative {kind}"
        elif self.maximum is not None:  # 'an int from 2 to 65533', not 'an int >= 2 <= 65533'
            return f"{'an' if kind == 'int' else 'a'} {kind} from {self.minimum} to {self.maximum}" + (
                " or None" if self.nullable else "")
        else:
            words = f"{'an' if kind == 'int' else 'a'} {kind} >= {self.minimum}"
        if self.maximum is not None:
            words += f" <= {self.maximum}"
        return words + (" or None" if self.nullable else "")

    def upper_bound(self) -> float | None:
        """The largest value accepted: the declared maximum, or INT_MAX for an int without one."""
        if self.maximum is not None:
            return self.maximum
        return INT_MAX if self.type is int else None

    def validate(self, value: Any, owner: str) -> Any:
        """`value` checked (and int widened to float where a float is wanted), or OptionError."""
        if value is None and self.nullable:
            return None
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and self.minimum is not None and value < self.minimum:
            ok = False
        if ok and self.choices and value not in self.choices:
            ok = False
        if not ok:
            raise OptionError(f"{owner}: {self.name} must be {self.describe()}, got {value!r}")
        if self.type is float and not math.isfinite(value):  # NaN passes every comparison
            raise OptionError(f"{owner}: {self.name} must be a finite float, got {value!r}")
        top = self.upper_bound()
        if top is not None and value > top:
            raise OptionError(f"{owner}: {self.name} must be at most {top}, got {value!r}")
        return value

    def parse(self, text: str, owner: str) -> Any:
        """The value written as `text` on a command line, validated."""
        raw = text.strip()
        if self.nullable and raw.lower() == "none":
            return None
        try:
            if self.type is bool:
                lowered = raw.lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(raw)
                value: Any = lowered in {"true", "1", "yes"}
            elif self.type is str:
                value = raw  # a quoted value's quotes were removed by the selection parser
            else:
                value = self.type(raw)
        except ValueError:
            raise OptionError(f"{owner}: {self.name} must be {self.describe()}, got {raw!r}") from None
        return self.validate(value, owner)


def resolve_options(
    owner: str, options: tuple[Option, ...], given: Mapping[str, Any], *, from_text: bool = False
) -> dict[str, Any]:
    """Every declared option, given values validated and the rest at their defaults."""
    declared = {o.name: o for o in options}
    for name in given:
        if name not in declared:
            if not declared:
                raise OptionError(f"{owner}: takes no options, got {name!r}")
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise OptionError(
                f"{owner}: unknown option {name!r}{hint} (options: {', '.join(declared)})"
            )
    resolved = {}
    for name, opt in declared.items():
        if name in given:
            value = given[name]
            resolved[name] = opt.parse(value, owner) if from_text else opt.validate(value, owner)
        else:
            resolved[name] = opt.default
    return resolved


def names_a_path(option: Option, value: Any) -> bool:
    """Whether `value` of `option` names an existing file or folder (`~` expanded, as the tasks'
    readers do): an `Option.path` whose value is none of its `keywords` (text-cls's `sotu`, even
    where a file or folder of that name happens to be in the current directory), nor empty
    (listops' '' = generate). A bare name counts (listops reads `path=data` as a file). A path the
    system refuses (a name too long) names nothing that exists: its reader says why."""
    if not (option.path and isinstance(value, str) and value.strip()) or is_keyword(option, value):
        return False
    try:
        return data_path(value).exists()
    except (OSError, RuntimeError):  # Path.exists(): ENAMETOOLONG on Python 3.11; expanduser(): ~nosuchuser
        return False


def is_keyword(option: Option, value: str) -> bool:
    word = value.strip()
    return any(word == k or (k.endswith(":") and word.startswith(k)) for k in option.keywords)


def data_path(value: str) -> Path:
    """A path option's value as the file or folder it names: `~` expanded, absolute, links resolved."""
    return Path(value).expanduser().resolve()
