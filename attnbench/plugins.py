"""`--plugin MOD`: import a user's module (by dotted name or .py path) so that it registers components."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

from attnbench.errors import AttnbenchError, PluginError
from attnbench.registry import PLUGIN_FILE_MODULE, PluginWarning, plugin_frame, registration_count


def import_plugin(target: str) -> ModuleType:
    """Import `target` (``my_pkg.attn``, ``path/to/attn.py``, or ``DIR/my_pkg.attn``: that module
    with DIR on sys.path); its import registers variants/tasks.

    A module that registers nothing on its first import is imported anyway, with a PluginWarning:
    the usual cause is a class left without its `@register_variant`.
    """
    target = target.strip()
    if not target:
        raise PluginError("--plugin: empty module name")
    try:  # `Path.is_file()` raises where the name is too long for the file system
        directory, name = _module_in_directory(target)
        is_file = directory is None and _written_as_file(target)
        found = is_file and Path(target).is_file()
    except OSError as exc:
        raise PluginError(f"--plugin {target}: {exc.strerror}") from None
    if is_file and not found:
        module = "" if target.endswith(".py") else f", nor a folder {Path(target).parent} holding module {Path(target).name}"
        raise PluginError(f"--plugin {target}: no such file{module}")
    # a file runs again each time (its registrations replace themselves); a module runs once
    first_import = is_file or name not in sys.modules
    before = registration_count()
    try:
        module = _import_file(Path(target)) if is_file else _import_module(name, directory)
    except AttnbenchError as exc:  # a malformed spec, a name clash: the plugin's own error, named
        raise PluginError(f"--plugin {target}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # a module that calls sys.exit() at import is a failed import too
        where = plugin_frame(exc)  # the plugin's own line, as an entry point's failure names it
        at = f" (at {where.filename}:{where.lineno})" if where is not None else ""
        raise PluginError(f"--plugin {target}: import failed: {type(exc).__name__}: {exc}{at}") from exc
    if first_import and registration_count() == before:
        warnings.warn(
            f"--plugin {target} registered no variant or task "
            "(a class decorated with @register_variant or @register_task)",
            PluginWarning,
            stacklevel=2,
        )
    return module


def recorded_plugin(target: str) -> str:
    """How a run records `--plugin target` (imported already) so that `--resume` imports the same
    code from any directory: a file's path made absolute; a module name as it is where it imports
    without the current directory (installed, or on PYTHONPATH), else ``DIR/name``, DIR the absolute
    directory it was found in, which `import_plugin` imports as `name` with DIR on sys.path (so a
    package keeps its relative imports and a module its imports of its neighbours)."""
    target = target.strip()
    directory, name = _module_in_directory(target)
    if directory is not None:
        return str(directory.resolve() / name)
    if _written_as_file(target):
        return str(Path(target).resolve())
    top = target.partition(".")[0]
    spec = getattr(sys.modules.get(top), "__spec__", None)
    root = _search_root(spec)
    if root is None or _imports_without_cwd(top, spec):
        return target
    return str(root / target)


def plugin_digest(target: str) -> str | None:
    """sha256 over the source of `--plugin target` (imported already): a file's bytes, a module's
    file, or every .py file of a package, with their names; None where its source is not found."""
    target = target.strip()
    directory, name = _module_in_directory(target)
    try:
        if directory is None and _written_as_file(target):
            root, files = Path(target).resolve().parent, [Path(target).resolve()]
        else:
            origin = getattr(sys.modules.get(name), "__file__", None)
            if origin is None:
                return None
            origin = Path(origin)
            root = origin.parent
            files = sorted(root.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(root)}\0".encode())
            digest.update(file.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def plugin_digests(targets: list[str]) -> dict[str, str | None]:
    """{target: `plugin_digest(target)`} for a run's --plugin targets (env.json `plugins`)."""
    return {target: plugin_digest(target) for target in targets}


def installed_plugins() -> dict[str, dict[str, str | None]]:
    """The installed plugins (entry points of the variant and task registries), as env.json
    `installed_plugins` records them beside `plugins` (the --plugin sources): 'variant:NAME (DIST)' →
    {distribution, version, module, sha256 of its source (`plugin_digest`), error where it failed
    to load}. They change what a run's names mean, so a report and `bench compare` say them."""
    import importlib.metadata

    from attnbench.tasks.base import TASKS
    from attnbench.variants.base import VARIANTS

    found: list[tuple[str, dict[str, str | None]]] = []
    for registry in (VARIANTS, TASKS):
        for ep in importlib.metadata.entry_points(group=registry.entry_point_group):
            dist = getattr(ep.dist, "name", None)
            error = registry.entry_point_error(ep)  # this entry point's, not another distribution's of its name
            # the whole top-level package: a module's imports of its neighbours are its code too
            top = ep.module.partition(".")[0]
            found.append((f"{registry.kind}:{ep.name}", {
                "distribution": dist, "version": getattr(ep.dist, "version", None), "module": ep.module,
                "sha256": None if error else plugin_digest(top) or plugin_digest(ep.module), "error": error}))
    # named with their distribution: two of one name (one refused) are two entries, in every run alike
    return dict(sorted((f"{name} ({ep['distribution'] or 'unknown distribution'})", ep) for name, ep in found))


def plugin_module_name(path: Path) -> str:
    """The module name of a plugin file: its stem and a short hash of its resolved path, so that two
    files named alike are two modules (their clashing names are refused), and one file is one module."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{PLUGIN_FILE_MODULE}{path.stem}_{digest}"


def _written_as_file(target: str) -> bool:
    """`attn.py` or `path/to/attn`: a file to run, not a module name (unless `_module_in_directory`)."""
    return target.endswith(".py") or os.sep in target


def _module_in_directory(target: str) -> tuple[Path | None, str]:
    """``DIR/my_pkg.attn`` (not a file, DIR a directory, the rest a dotted name) → (DIR, name);
    anything else → (None, target)."""
    if os.sep not in target or target.endswith(".py") or Path(target).is_file():
        return None, target
    directory, _, name = target.rpartition(os.sep)
    if not (name and all(part.isidentifier() for part in name.split(".")) and Path(directory or os.sep).is_dir()):
        return None, target
    return Path(directory or os.sep), name


def _import_file(path: Path) -> ModuleType:
    """Run a plugin file as a module, its folder first on sys.path as `python FILE` puts it, so it
    imports the modules beside it (`_warn_shadowed`: unless one of their names is taken already)."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    _warn_shadowed(path)
    name = plugin_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _warn_shadowed(path: Path) -> None:
    """A PluginWarning naming each module beside the plugin file `path` whose name Python holds
    already from another place (a second plugin folder's helpers.py): an import of it in the plugin
    gets that one, not the one beside it."""
    folder = path.resolve().parent
    for name in sorted(_module_names(folder) - {path.stem}):
        module = sys.modules.get(name)
        found = _location(module.__spec__) if getattr(module, "__spec__", None) else ()
        if module is not None and not any(Path(p).is_relative_to(folder) for p in found):
            where = found[0] if found else "built in"
            beside = folder / f"{name}.py" if (folder / f"{name}.py").is_file() else folder / name
            warnings.warn(
                f"--plugin {path}: a module {name} is already imported from {where}, so an import of {name} "
                f"in it gets that one, not {beside}; rename one",
                PluginWarning,
                stacklevel=3,
            )


def _module_names(folder: Path) -> set[str]:
    """The top-level modules a folder holds: its .py files and its packages (folders with __init__.py)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return set()
    return {p.stem for p in entries if p.suffix == ".py" and p.stem.isidentifier()} | {
        p.name for p in entries if p.is_dir() and (p / "__init__.py").is_file() and p.name.isidentifier()
    }


def _import_module(target: str, directory: Path | None = None) -> ModuleType:
    if directory is not None:  # where the run that recorded it found it
        entry = str(directory.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
    elif "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module beside the user, as `python -m` would find it
    module = importlib.import_module(target)
    found = _location(module.__spec__) if module.__spec__ else ()
    if directory is not None and not any(Path(p).is_relative_to(directory.resolve()) for p in found):
        where = found[0] if found else "built in"
        raise PluginError(f"a module {target} is already imported from {where}, not {directory}: "
                          "two plugins (or a plugin and a standard module) share that name; rename one")
    return module


def _search_root(spec) -> Path | None:
    """The directory a top-level module or package was found in (the sys.path entry); None where it
    has no location on disk (built in, frozen, in a zip file)."""
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or ())
    if locations:  # a package (a namespace package has no origin)
        folder = Path(locations[0])
    elif spec.has_location and spec.origin:
        folder = Path(spec.origin)
    else:
        return None
    return folder.parent if folder.parent.is_dir() else None


def _imports_without_cwd(top: str, spec) -> bool:
    """Whether `import top` finds the same module with the current directory (and relative entries)
    off sys.path, as it would in a command run anywhere else."""
    here = Path.cwd().resolve()
    entries = [p for p in sys.path if p and os.path.isabs(p) and Path(p).resolve() != here]
    for finder in sys.meta_path:
        try:
            if finder is importlib.machinery.PathFinder:
                found = finder.find_spec(top, entries)
            else:
                found = finder.find_spec(top, None) if hasattr(finder, "find_spec") else None
        except Exception:  # a finder of someone else's that fails on this name: not one that finds it
            found = None
        if found is not None:
            return _location(found) == _location(spec)
    return False


def _location(spec) -> tuple[str, ...]:
    paths = [spec.origin] if spec.has_location and spec.origin else list(spec.submodule_search_locations or ())
    return tuple(os.path.realpath(p) for p in paths)
