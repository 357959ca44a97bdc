"""`--plugin MOD`: import a user's module (by dotted name or .py path) so that it registers components."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from attnbench.errors import PluginError


def import_plugin(target: str) -> ModuleType:
    """Import `target` (``my_pkg.attn`` or ``path/to/attn.py``); its import registers variants/tasks."""
    target = target.strip()
    if not target:
        raise PluginError("--plugin: empty module name")
    try:
        if target.endswith(".py") or os.sep in target:
            path = Path(target)
            if not path.is_file():
                raise PluginError(f"--plugin {target}: no such file")
            name = f"attnbench_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # a module beside the user, as `python -m` would find it
        return importlib.import_module(target)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"--plugin {target}: import failed: {type(exc).__name__}: {exc}") from exc
