"""A variant's code at another git revision, to time it beside the working tree's (`bench perf --against REV`).

A regression gate against a results CSV compares timings taken at different hours, and on a shared
machine those drift by more than any tolerance worth setting (unchanged `local` code ran 13–24 %
slower 40 minutes later here). Timing the old kernel and the new one in the same interleaved rounds
cancels that drift: the gate then reads a ratio taken side by side, as every other ratio here is.

The variant's own module is read from REV (`git show REV:variants/<module>.py`) and executed as a
fresh module with `register_variant` capturing its classes instead of registering them, so the
registry and the working tree's classes are untouched. Everything it imports comes from the working
tree (base classes, masking, references, sibling variants): `--against` compares the variant's own
module only, and leaves out a variant whose `core` lives elsewhere. A module that no longer fits
the working tree is reported as one line, not timed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

from attnbench.errors import AttnbenchError
from attnbench.variants import base as variant_base
from attnbench.variants.base import VARIANTS


def revision_classes(rev: str, names: list[str], log=lambda line: None) -> tuple[str, dict[str, type]]:
    """(REV's short hash, {variant name: its layer class at REV}) for the built-in variants `names`.

    A variant is left out, with a log line, when its module did not exist at REV or its `core` is
    not defined in that module (e.g. `dot-product` inherits `multi-head`'s): the working tree's
    code would then be timed against itself.
    """
    full = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], Path(variant_base.__file__).parent, rev)
    short, classes = full[:7], {}
    for name in names:
        current = VARIANTS.get(name).obj
        path = Path(sys.modules[current.__module__].__file__)
        try:
            source = _git(["show", f"{full}:./{path.name}"], path.parent, rev)
        except AttnbenchError as exc:
            log(f"--against {rev}: {name} not compared ({exc})")
            continue
        module_name = f"attnbench._at_{short}.{path.stem}"
        cls = _load(source, module_name, path, rev).get(name)
        if cls is None:
            raise AttnbenchError(f"--against {rev}: {path.name} there registers no variant {name!r}")
        if cls.core.__module__ != module_name:
            log(f"--against {rev}: {name} not compared (its core comes from {cls.core.__module__}, "
                "which --against takes from the working tree)")
            continue
        classes[name] = cls
    return short, classes


def _git(args: list[str], cwd: Path, rev: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:  # no git on PATH
        raise AttnbenchError(f"--against {rev}: cannot run git ({exc.strerror or exc})") from None
    if done.returncode == 0:
        return done.stdout.strip() if args[0] == "rev-parse" else done.stdout
    if args[0] == "rev-parse":
        raise AttnbenchError(f"--against {rev}: not a commit of the git checkout attnbench runs from")
    raise AttnbenchError((done.stderr.strip().splitlines() or ["git failed"])[-1])


def _load(source: str, module_name: str, path: Path, rev: str) -> dict[str, type]:
    """Execute a variant module's source; {registered name or alias: class} of what it would register."""
    captured: dict[str, type] = {}

    def capture(name: str, cls: type | None = None, *, aliases: tuple[str, ...] = ()):
        def keep(layer_cls: type) -> type:
            captured.update(dict.fromkeys((name, *aliases), layer_cls))
            return layer_cls
        return keep(cls) if cls is not None else keep

    module = types.ModuleType(module_name)
    module.__file__ = f"{path} at {rev}"
    sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
    register = variant_base.register_variant
    variant_base.register_variant = capture  # read by the module's `from … import register_variant`
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if not isinstance(exc, Exception):
            raise
        raise AttnbenchError(f"--against {rev}: {path.name} there does not load with this attnbench: "
                             f"{type(exc).__name__}: {exc}") from None
    finally:
        variant_base.register_variant = register
    return captured


def build_at(cls: type, name: str, d_model: int, n_heads: int, options: dict):
    """A layer of REV's class with the options resolved by its own spec, as `build_variant` does."""
    layer = cls(d_model, n_heads, **cls.spec.resolve(name, options))
    layer.variant_name = name
    return layer


def changed_since(rev: str) -> set[str]:
    """The files of the variants package (names such as `local.py`) whose code differs between git
    revision REV and the working tree, uncommitted changes included. A Python file whose change
    is only in docstrings, comments or layout is not one: its code (`_code`) is the same."""
    folder = Path(variant_base.__file__).parent
    full = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], folder, rev)  # one line if not a commit
    diff = _git(["diff", "--name-only", "--relative", full, "--", "."], folder, rev)
    names = {Path(line).name for line in diff.splitlines() if line.strip()}
    return {name for name in names if not _same_code(name, full, folder, rev)}


def _same_code(name: str, full: str, folder: Path, rev: str) -> bool:
    """Whether the package file `name` has the same code at `full` and in the working tree."""
    if not name.endswith(".py"):
        return False
    try:
        now = (folder / name).read_text()
        then = _git(["show", f"{full}:./{name}"], folder, rev)
    except (OSError, AttnbenchError):  # added or deleted since: changed
        return False
    code = _code(now)
    return code is not None and code == _code(then)


def _code(source: str) -> str | None:
    """A module's code without its docstrings, comments and layout (its syntax tree, dumped), or
    None where it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def module_files(name: str, rev: str | None = None) -> tuple[str, set[str]]:
    """(the variant's own module file, the files of the variants package its code uses): its module
    and every package module it imports, anywhere in its source (function bodies too), and theirs,
    in the working tree; with `rev`, also those that the module's source at REV imports (timed
    beside the working tree's, REV's module runs on the working tree's files)."""
    own = Path(sys.modules[VARIANTS.get(name).obj.__module__].__file__)
    folder = own.parent
    sources = [own.read_text()]
    if rev is not None:
        try:
            sources.append(_git(["show", f"{rev}:./{own.name}"], folder, rev))
        except AttnbenchError:  # the module did not exist at REV: `revision_classes` says so
            pass
    seen, todo = {own.name}, set().union(*(_package_imports(source, folder) for source in sources))
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo |= _package_imports((folder / file).read_text(), folder)
    return own.name, seen


def _package_imports(source: str, folder: Path) -> set[str]:
    """The files of the variants package (`folder`) that `source` imports, at any depth of its
    code: `from attnbench.variants.x import …`, `import attnbench.variants.x`, `from
    attnbench.variants import x`, relative imports; a name that is no module file is its __init__.py."""
    package = variant_base.__name__.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] for a in node.names if a.name.startswith(package + ".")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.startswith(package + "."):
                names.add(module.split(".")[2])
            elif (node.level == 0 and module == package) or (node.level == 1 and not module):
                names |= {a.name for a in node.names}
            elif node.level == 1:
                names.add(module.split(".")[0])
    return {f"{n}.py" if (folder / f"{n}.py").is_file() else "__init__.py" for n in names}
