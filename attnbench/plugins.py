"""`--plugin MOD`: import a user's module (by dotted name or .py path) so that it registers components."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

from attnbench.errors import AttnbenchError, PluginError
from attnbench.registry import PLUGIN_FILE_MODULE, PluginWarning, registration_count


def import_plugin(target: str) -> ModuleType:
    """Import `target` (``my_pkg.attn`` or ``path/to/attn.py``); its import registers variants/tasks.

    A module that registers nothing on its first import is imported anyway, with a PluginWarning:
    the usual cause is a class left without its `@register_variant`.
    """
    target = target.strip()
    if not target:
        raise PluginError("--plugin: empty module name")
    is_file = target.endswith(".py") or os.sep in target
    if is_file and not Path(target).is_file():
        raise PluginError(f"--plugin {target}: no such file")
    # a file runs again each time (its registrations replace themselves); a module runs once
    first_import = is_file or target not in sys.modules
    before = registration_count()
    try:
        module = _import_file(Path(target)) if is_file else _import_module(target)
    except AttnbenchError as exc:  # a malformed spec, a name clash: the plugin's own error, named
        raise PluginError(f"--plugin {target}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # a module that calls sys.exit() at import is a failed import too
        raise PluginError(f"--plugin {target}: import failed: {type(exc).__name__}: {exc}") from exc
    if first_import and registration_count() == before:
        warnings.warn(
            f"--plugin {target} registered no variant or task "
            "(a class decorated with @register_variant or @register_task)",
            PluginWarning,
            stacklevel=2,
        )
    return module


def plugin_module_name(path: Path) -> str:
    """The module name of a plugin file: its stem and a short hash of its resolved path, so that two
    files named alike are two modules (their clashing names are refused), and one file is one module."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{PLUGIN_FILE_MODULE}{path.stem}_{digest}"


def _import_file(path: Path) -> ModuleType:
    name = plugin_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _import_module(target: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module beside the user, as `python -m` would find it
    return importlib.import_module(target)
