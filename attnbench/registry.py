"""A generic name → object registry with aliases, glob listing, did-you-mean and lazy plugins.

One `Registry` serves variants, tasks and profiles. Third-party packages extend a registry through
an entry-point group (e.g. ``attnbench.variants``); those are loaded lazily, on the first lookup
or listing, and a plugin that fails is recorded by name with its error while everything else keeps
working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import importlib.metadata
import inspect
import os
import sys
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from attnbench.errors import AttnbenchError, OptionError, PluginError, UnknownNameError
from attnbench.options import Option

T = TypeVar("T")

BUILT_IN = "built-in"
PLUGIN_FILE_MODULE = "attnbench_plugin_"  # prefix of the module name of a `--plugin FILE.py`
# a suggestion at least this close (difflib ratio) is a typo's fix ('distanse' → 'distance'); a looser
# one ('temp-softmax' → 'softmax') may as well be a plugin's name, so the plugin hint is added to it
TYPO_RATIO = 0.8

_registrations = 0  # taken by every registry so far; an import that adds none registered nothing


def registration_count() -> int:
    """How many registrations all registries have taken (re-registrations of a re-import included)."""
    return _registrations


class PluginWarning(UserWarning):
    """A plugin failed to load; the rest of the registry still works."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object: its canonical name, aliases and where it came from."""

    name: str
    obj: T
    aliases: tuple[str, ...] = ()
    origin: str = BUILT_IN


SELECTION_SYNTAX = set(",()=*?[]")  # lists, inline options and globs of a selection ('local(window=4),lin*')
ALL = "all"  # in a selection, every registered name


def normalize(name: str) -> str:
    """Lookup key of a name: case-insensitive, `_` and `-` interchangeable."""
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Named objects of one kind ("variant", "task", ...), extensible through entry points.

    `adapt(name, loaded)` turns what an entry point loads into the object to register; it returns
    None when the loaded object was a module whose import registered its own entries, and raises
    PluginError when the object is malformed.
    """

    def __init__(
        self,
        kind: str,
        *,
        entry_point_group: str | None = None,
        adapt: Callable[[str, object], T | None] | None = None,
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._adapt = adapt
        self._entries: dict[str, Entry[T]] = {}  # canonical name -> entry
        self._keys: dict[str, str] = {}  # normalized name or alias -> canonical name
        self._plugin_errors: dict[str, str] = {}
        self._failed_entry_points: set[tuple[str, str, str]] = set()  # (name, value, distribution) of each
        self._plugins_loaded = entry_point_group is None
        self._origin_override: str | None = None

    # ---------------------------------------------------------------- registering
    def register(
        self, name: str, obj: T, *, aliases: tuple[str, ...] = (), origin: str | None = None
    ) -> T:
        """Register `obj` under `name` (and `aliases`); a name may be taken only once."""
        global _registrations
        if not isinstance(name, str) or not name.strip():
            raise AttnbenchError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        for key in (name, *aliases):
            if set(key) & SELECTION_SYNTAX or any(c.isspace() for c in key):
                raise AttnbenchError(
                    f"{self.kind} name {key!r}: no spaces nor any of {' '.join(sorted(SELECTION_SYNTAX))} "
                    "(they are the syntax of --variants and --tasks, so no selection could name it)"
                )
            if isinstance(key, str) and normalize(key) == ALL:
                raise AttnbenchError(
                    f"{self.kind} name {key!r}: 'all' selects every registered {self.kind}, so no selection "
                    "could name this one alone; choose another name"
                )
        origin = origin or self._origin_override or _origin_of(obj)
        entry = Entry(name=name, obj=obj, aliases=tuple(aliases), origin=origin)
        for key in (name, *entry.aliases):
            taken = self._keys.get(normalize(key))
            if taken is not None and not _same_definition(self._entries[taken].obj, obj):
                raise AttnbenchError(
                    f"{self.kind} name {key!r} is already taken by {taken!r} "
                    f"({self._entries[taken].origin})"
                )
        if name in self._entries:  # re-import of the same definition: replace it
            self._unregister(name)
        self._entries[name] = entry
        for key in (name, *entry.aliases):
            self._keys[normalize(key)] = name
        _registrations += 1
        return obj

    def decorator(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """`@registry.decorator("name")` form of `register`."""

        def wrap(obj: T) -> T:
            return self.register(name, obj, aliases=aliases)

        return wrap

    def _unregister(self, name: str) -> None:
        entry = self._entries.pop(name)
        for key in (entry.name, *entry.aliases):
            self._keys.pop(normalize(key), None)

    @contextlib.contextmanager
    def temporary(self) -> Iterator[None]:
        """Undo every registration made inside the block (for tests and one-off checks)."""
        entries, keys = dict(self._entries), dict(self._keys)
        errors, failed, loaded = dict(self._plugin_errors), set(self._failed_entry_points), self._plugins_loaded
        try:
            yield
        finally:
            self._entries, self._keys = entries, keys
            self._plugin_errors, self._failed_entry_points, self._plugins_loaded = errors, failed, loaded

    # ---------------------------------------------------------------- looking up
    def resolve(self, name: str) -> str:
        """Canonical name for `name` or an alias; unknown names fail with a did-you-mean."""
        self.load_plugins()
        canonical = self._keys.get(normalize(name)) if isinstance(name, str) else None
        if canonical is not None:
            return canonical
        if isinstance(name, str) and name in self._plugin_errors:
            raise PluginError(
                f"{self.kind} {name!r} is unavailable: its plugin failed to load: "
                f"{self._plugin_errors[name]}"
            )
        raise UnknownNameError(self._unknown_message(name))

    def get(self, name: str) -> Entry[T]:
        """The entry registered under `name` or one of its aliases."""
        return self._entries[self.resolve(name)]

    def __getitem__(self, name: str) -> T:
        return self.get(name).obj

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return isinstance(name, str) and normalize(name) in self._keys

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted canonical names; `pattern` is a glob matched against names and aliases."""
        self.load_plugins()
        if pattern is None:
            return sorted(self._entries)
        pat = normalize(pattern)
        return sorted(
            e.name
            for e in self._entries.values()
            if any(fnmatch.fnmatchcase(normalize(k), pat) for k in (e.name, *e.aliases))
        )

    def entries(self, pattern: str | None = None) -> list[Entry[T]]:
        """Entries in name order, optionally filtered by a glob."""
        return [self._entries[n] for n in self.names(pattern)]

    def _unknown_message(self, name: object) -> str:
        """'unknown variant 'lcoal'; did you mean 'local'? (known: …)' (the hint: `close_hint`)."""
        known = ", ".join(sorted(self._entries)) or "none registered"
        return f"unknown {self.kind} {name!r}{self.close_hint(name)} (known: {known})"

    def close_hint(self, name: object) -> str:
        """"; did you mean 'local'?" for a name that is none of this registry's, or the plugin
        hint, or ''. Each entry is suggested once, by whichever of its name and aliases is closest
        (a name and its own alias would read as two choices). A registry that plugins extend also
        says how to load one, since a plugin's name given without `--plugin` is the usual cause:
        alone when nothing is close (difflib's cutoff of 0.6 keeps such a name from drawing an
        unrelated suggestion), and after a loose suggestion ('temp-softmax' → 'softmax') unless
        user code already registered a component here; a typo's fix (TYPO_RATIO) stands alone."""
        wanted = normalize(str(name))
        keys = {normalize(k): (e.name, k) for e in self._entries.values() for k in (e.name, *e.aliases)}
        close = difflib.get_close_matches(wanted, sorted(keys), n=6, cutoff=0.6)
        suggested: dict[str, str] = {}  # entry name -> the closest of its keys, as registered
        for key in close:
            entry, spelled = keys[key]
            suggested.setdefault(entry, spelled)
        picks = list(suggested.values())[:3]
        if broken := self._closer_broken_plugin(wanted, close[0] if close else None):
            return f"; did you mean {broken!r}? its installed plugin failed to load: {self._plugin_errors[broken]}"
        plugin_hint = f"a plugin's {self.kind}? load it with --plugin MODULE"
        if not picks:
            hint = f"; {plugin_hint} (or import its module)" if self.entry_point_group is not None else ""
        elif self.entry_point_group is not None and not self._user_registered() and (
            difflib.SequenceMatcher(None, wanted, close[0]).ratio() < TYPO_RATIO
        ):
            hint = f"; did you mean {' or '.join(repr(c) for c in picks)}, or {plugin_hint}"
        else:
            hint = f"; did you mean {' or '.join(repr(c) for c in picks)}?"
        return hint

    def _closer_broken_plugin(self, wanted: str, registered: str | None) -> str | None:
        """The name of an installed plugin that failed to load, closer to `wanted` than the closest
        registered key `registered` (a typo of a broken plugin's name would otherwise point at
        --plugin, or at another component); None where there is none."""
        broken = {normalize(n): n for n in self._plugin_errors}
        match = difflib.get_close_matches(wanted, sorted(broken), n=1, cutoff=0.6)
        if not match:
            return None
        ratio = difflib.SequenceMatcher(None, wanted, match[0]).ratio()
        if registered is not None and difflib.SequenceMatcher(None, wanted, registered).ratio() >= ratio:
            return None
        return broken[match[0]]

    def _user_registered(self) -> bool:
        """Whether user code (a `--plugin` module, or one imported) registered anything here."""
        return any(e.origin.startswith("python") for e in self._entries.values())

    # ---------------------------------------------------------------- plugins
    @property
    def plugin_errors(self) -> dict[str, str]:
        """Entry-point name → error, for every plugin that failed to load."""
        self.load_plugins()
        return dict(self._plugin_errors)

    def entry_point_error(self, ep: importlib.metadata.EntryPoint) -> str | None:
        """Why entry point `ep` failed to load (as `plugin_errors` says it), None where it loaded:
        of two distributions' entry points of one name, only the one that failed has the error."""
        self.load_plugins()
        if (ep.name, ep.value, _dist_name(ep)) not in self._failed_entry_points:
            return None
        return self._plugin_errors.get(ep.name)

    def load_plugins(self, *, reload: bool = False) -> None:
        """Load the entry-point group once (again with `reload=True`)."""
        if self._plugins_loaded and not reload:
            return
        self._plugins_loaded = True
        if reload:
            self._plugin_errors.clear()
            self._failed_entry_points.clear()
        # entry points into one module that fails to import share its error: imported once, said once
        failed: dict[tuple[str, str], list[importlib.metadata.EntryPoint]] = {}
        broken: dict[str, str] = {}  # module → its import error
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            error = broken.get(ep.module) or self._load_entry_point(ep)
            if error is None:
                continue
            if ep.module not in sys.modules:  # the import itself failed (importlib drops the module)
                broken[ep.module] = error
            failed.setdefault((_dist_name(ep), error), []).append(ep)
        for (dist, error), eps in failed.items():
            where = ", ".join(f"'{ep.name} = {ep.value}'" for ep in eps)
            for ep in eps:
                self._plugin_errors[ep.name] = f"{error} [entry point{'s' * (len(eps) > 1)} {where} of {dist}]"
                self._failed_entry_points.add((ep.name, ep.value, dist))
            names = ", ".join(repr(ep.name) for ep in eps)
            warnings.warn(
                f"{self.kind} plugin{'s' * (len(eps) > 1)} {names} failed to load: {self._plugin_errors[eps[0].name]}",
                PluginWarning,
                stacklevel=3,
            )

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> str | None:
        """Load and register one entry point; the error, in one line, where that fails."""
        origin = f"plugin:{_dist_name(ep)}"
        try:
            self._origin_override = origin
            before, imported = len(self._entries), ep.module in sys.modules
            loaded = ep.load()
            obj = self._adapt(ep.name, loaded) if self._adapt else loaded
            if obj is not None:
                self.register(ep.name, obj, origin=origin)
            elif isinstance(loaded, types.ModuleType) and not imported and len(self._entries) == before:
                # a module whose import registers nothing here: its variant would be "unknown", unexplained
                return f"its module {ep.module} registered no {self.kind} (none named {ep.name!r}, nor any other)"
        except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit) never breaks the built-ins
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not isinstance(exc, (PluginError, AttnbenchError)):
                where = plugin_frame(exc)
                if where is not None:
                    message += f" (at {where.filename}:{where.lineno})"
            return message
        finally:
            self._origin_override = None
        return None


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return getattr(ep.dist, "name", None) or "unknown distribution"


def plugin_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of `exc` in the plugin's own code: not in importlib (which raises a
    missing attribute, `module:Typo`, itself) nor in attnbench (its loaders, or an `Option(...)`
    the plugin's spec gave a bad type: the plugin's line says which); None when the plugin's code
    never ran."""
    skip = (os.path.dirname(importlib.__file__), "<frozen importlib")
    frames = [summary for (frame, _), summary in zip(traceback.walk_tb(exc.__traceback__),
                                                     traceback.extract_tb(exc.__traceback__))
              if not summary.filename.startswith(skip) and not _in_attnbench(frame.f_globals.get("__name__") or "")]
    return frames[-1] if frames else None


def _in_attnbench(module: str) -> bool:
    return module == "attnbench" or module.startswith("attnbench.")


def _origin_of(obj: object) -> str:
    module = getattr(obj, "__module__", None) or ""
    if _in_attnbench(module):
        return BUILT_IN
    if module.startswith(PLUGIN_FILE_MODULE):  # a `--plugin path/to/file.py`: the file says more
        return f"python:{getattr(sys.modules.get(module), '__file__', None) or module}"
    return f"python:{module}" if module else "python"


def _same_definition(a: object, b: object) -> bool:
    """True when `b` is `a` or a re-import of the same module-level definition."""
    if a is b:
        return True
    qual = lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None))  # noqa: E731
    return qual(a) == qual(b) and qual(a)[1] is not None


def check_spec_class(
    kind: str, name: str, obj: object, *, base: type, base_text: str, spec_type: type,
    choices: dict[str, tuple[str, ...]], reserved: dict[str, str] | None = None,
) -> type:
    """`obj` if it is a valid plugin class: a subclass of `base` whose class attribute `spec` is a
    `spec_type` with each field in `choices` set to one of its allowed values, every other field
    of the type its annotation says (`int | None`, `bool`, ...), and no option named in `reserved`
    (name → why); else a PluginError that names the `kind` ("variant", "task") and the registered
    name."""
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise PluginError(f"{kind} {name!r}: {obj!r} is not {base_text}")
    spec = getattr(obj, "spec", None)
    if not isinstance(spec, spec_type):
        raise PluginError(
            f"{kind} {name!r}: class {obj.__qualname__} needs a class attribute "
            f"`spec: {spec_type.__name__}`, found {type(spec).__name__}"
        )
    for field_name, allowed in choices.items():
        value = getattr(spec, field_name)
        if value not in allowed:
            raise PluginError(
                f"{kind} {name!r}: spec.{field_name} must be one of {', '.join(allowed)}, got {value!r}"
            )
    if hasattr(spec, "options"):
        _check_options(f"{kind} {name!r}", spec.options)
        for option in spec.options:
            if option.name in (reserved or {}):
                raise PluginError(f"{kind} {name!r}: option {option.name!r} is reserved ({reserved[option.name]}); "
                                  "name it otherwise")
    _check_field_types(f"{kind} {name!r}: class {obj.__qualname__}", spec, spec_type, skip={*choices, "options"})
    return obj


def _check_field_types(owner: str, spec: object, spec_type: type, *, skip: set[str]) -> None:
    """Each field of dataclass `spec_type` (but those in `skip`) holds a value of its annotated type
    in `spec` (`int | None`, `bool`, …); a PluginError naming `owner` and the field otherwise."""
    if not dataclasses.is_dataclass(spec_type):
        return
    hints = typing.get_type_hints(spec_type)
    for field in dataclasses.fields(spec_type):  # a subclass's own fields: its own affair
        if field.name in skip:
            continue  # checked by the caller, with their own advice
        want, value = hints[field.name], getattr(spec, field.name)
        union = typing.get_origin(want) in (typing.Union, types.UnionType)
        kinds = [typing.get_origin(t) or t for t in (typing.get_args(want) if union else (want,))]
        if typing.Any in kinds or not all(isinstance(t, type) for t in kinds):
            continue  # Any, a TypeVar, ...: nothing to check against
        if isinstance(value, bool):  # a bool is an int to isinstance, but no int field wants True
            ok = bool in kinds
        else:
            ok = isinstance(value, tuple(kinds)) or (float in kinds and isinstance(value, int))
        if not ok:
            expected = " | ".join("None" if t is type(None) else t.__name__ for t in kinds)
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise PluginError(f"{owner}: spec.{field.name} must be {expected}, got {type(value).__name__} {shown}")


def _check_options(owner: str, options: object) -> None:
    """PluginError unless `options` is a tuple of Option with distinct identifier names, each default
    valid by its own option (so a bad default is the plugin's error, not the user's)."""
    if not isinstance(options, tuple):
        got = f"one Option {options.name!r}" if isinstance(options, Option) else type(options).__name__
        raise PluginError(
            f"{owner}: spec.options must be a tuple of Option, got {got}; write options=(Option(...),)"
        )
    seen: set[str] = set()
    for i, opt in enumerate(options):
        if not isinstance(opt, Option):
            raise PluginError(f"{owner}: spec.options[{i}] must be an Option, got {type(opt).__name__} {opt!r}")
        if not (isinstance(opt.name, str) and opt.name.isidentifier()):
            raise PluginError(f"{owner}: spec.options[{i}] has name {opt.name!r}; an option's name is an identifier")
        if opt.name in seen:
            raise PluginError(f"{owner}: spec.options declares {opt.name!r} twice")
        seen.add(opt.name)
        try:
            opt.validate(opt.default, owner)
        except OptionError as exc:
            problem = str(exc).removeprefix(f"{owner}: {opt.name} ")
            raise PluginError(f"{owner}: the default of option {opt.name!r} {problem}") from None


def class_or_module(check: Callable[[str, object], T]) -> Callable[[str, object], T | None]:
    """An entry point's `adapt`: a loaded module registered its classes on import (nothing more to
    add); a loaded class is checked by `check(name, obj)` and registered under the entry point's name."""

    def adapt(name: str, loaded: object) -> T | None:
        return None if isinstance(loaded, types.ModuleType) else check(name, loaded)

    return adapt
