"""Third-party variants: an installed entry-point package, a broken one, and `--plugin MODULE`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from attnbench import build_variant, list_variants
from attnbench.errors import PluginError
from attnbench.plugins import import_plugin, recorded_plugin
from attnbench.registry import PluginWarning
from attnbench.variants.check import FAIL, run_checks

EXAMPLE = Path(__file__).parent / "plugin_example"

GOOD_MODULE = """
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("mha-copy", aliases=("copycat",))
    class Copy(MultiHeadAttention):
        pass
"""


def bench(*args: str, pythonpath: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "from attnbench.cli import main; main()", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """The example plugin package really installed (pip, no deps) into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def test_an_installed_plugin_is_listed_built_and_checked(installed_example):
    listing = bench("ls", "variants", pythonpath=installed_example)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "cosine" in line)
    assert "plugin:attnbench-example-plugin" in row and "n^2" in row

    checked = bench("check", "--variants", "cosine", pythonpath=installed_example)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout and checked.stdout.count("PASS") >= 6
    assert "reference" in checked.stdout


def test_installed_plugin_builds_in_process(installed_example, monkeypatch, sandbox):
    monkeypatch.syspath_prepend(str(installed_example))
    sandbox.load_plugins(reload=True)
    layer = build_variant("cosine", d_model=32, n_heads=4)
    out, weights = layer(torch.randn(2, 9, 32), causal=True)
    assert out.shape == (2, 9, 32) and weights is None
    assert "cosine" in list_variants("cos*")
    assert all(r.status != FAIL for r in run_checks("cosine"))


def test_a_broken_plugin_is_named_and_the_rest_keep_working(tmp_path, monkeypatch, sandbox, make_distribution):
    make_distribution(
        tmp_path,
        "attn-broken",
        {"exploding": "attn_exploding:Layer", "not-a-layer": "attn_notlayer:VALUE", "exiting": "attn_exiting:Layer",
         "good": "attn_good"},
        {
            "attn_exploding": "import definitely_not_installed_module\n",
            "attn_exiting": "import sys\nsys.exit(4)\n",
            "attn_notlayer": "VALUE = 42\n",
            "attn_good": GOOD_MODULE,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning) as caught:
        sandbox.load_plugins(reload=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert "'exploding' failed to load: ModuleNotFoundError" in messages
    assert "'not-a-layer' failed to load: PluginError" in messages and "not an nn.Module subclass" in messages
    assert "'exiting' failed to load: SystemExit: 4" in messages
    assert {"mha-copy", "multi-head", "local"} <= set(list_variants())
    assert sandbox.get("copycat").origin == "plugin:attn-broken"
    assert build_variant("local", d_model=16, n_heads=2)(torch.randn(1, 4, 16))[0].shape == (1, 4, 16)
    with pytest.raises(PluginError, match="'exploding' is unavailable"):
        build_variant("exploding")

    listing = bench("ls", "variants", pythonpath=tmp_path)
    assert listing.returncode == 0
    assert "mha-copy" in listing.stdout and "multi-head" in listing.stdout
    assert "bench: warning: variant plugin 'exploding' failed to load" in listing.stderr and "Traceback" not in listing.stderr
    # `bench check` of every variant fails on a plugin that never loaded (before: "all 7 checks passed", exit 0)
    checked = bench("check", "--checks", "shape", pythonpath=tmp_path)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "its plugin failed to load: ModuleNotFoundError" in " ".join(checked.stdout.split())
    named = bench("check", "--variants", "multi-head", "--checks", "shape", pythonpath=tmp_path)
    assert named.returncode == 0  # the variants named loaded: the others' failure is a warning only


def test_entry_points_into_one_module_that_fails_to_import_share_one_warning(tmp_path, monkeypatch, sandbox,
                                                                          make_distribution):
    """Before: the module was imported again for each entry point, and each warned of the same error."""
    make_distribution(
        tmp_path, "attn-trio",
        {"first": "attn_trio:A", "second": "attn_trio:B", "alone": "attn_alone:C"},
        {"attn_trio": "with open('imports.log', 'a') as log:\n    log.write('x')\nimport definitely_not_installed_module\n",
         "attn_alone": "import also_not_installed\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(PluginWarning) as caught:
        sandbox.load_plugins(reload=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 2 and (tmp_path / "imports.log").read_text() == "x"  # imported once
    trio = next(m for m in messages if "'first'" in m)
    assert trio.startswith("variant plugins 'first', 'second' failed to load: ModuleNotFoundError: ")
    assert trio.endswith("[entry points 'first = attn_trio:A', 'second = attn_trio:B' of attn-trio]")
    assert sandbox.plugin_errors["second"] == sandbox.plugin_errors["first"]
    assert any(m.startswith("variant plugin 'alone' failed to load: ") for m in messages)


def test_an_entry_point_module_that_registers_nothing_says_so(tmp_path, monkeypatch, sandbox, make_distribution):
    """Before: silently ignored; `bench check --variants quiet` then called it an unknown variant."""
    make_distribution(tmp_path, "attn-quiet", {"quiet": "attn_quiet"}, {"attn_quiet": "VALUE = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match=r"variant plugin 'quiet' failed to load: its module attn_quiet "
                                           r"registered no variant \(none named 'quiet', nor any other\)"):
        sandbox.load_plugins(reload=True)
    with pytest.raises(PluginError, match="'quiet' is unavailable: its plugin failed to load"):
        build_variant("quiet")


def test_plugin_option_imports_a_module_or_a_file(tmp_path):
    (tmp_path / "my_attention.py").write_text(GOOD_MODULE.replace("    ", "", 1).replace("\n    ", "\n"))
    by_name = bench("ls", "variants", "mha-*", "--plugin", "my_attention", cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert "mha-copy" in by_name.stdout and "python:my_attention" in by_name.stdout
    by_path = bench("check", "--variants", "copycat", "--checks", "shape,reference",
                    "--plugin", str(tmp_path / "my_attention.py"))
    assert by_path.returncode == 0, by_path.stdout + by_path.stderr
    assert by_path.stdout.count("PASS") == 2


@pytest.mark.parametrize(
    ("target", "message"),
    [("no_such_module_xyz", "--plugin no_such_module_xyz: import failed: ModuleNotFoundError"),
     ("missing/file.py", "--plugin missing/file.py: no such file"),
     ("exits.py", "--plugin exits.py: import failed: SystemExit: 3 (at {tmp}/exits.py:2)"),
     ("deep.py", "--plugin deep.py: import failed: ValueError: bad config value (at {tmp}/helper_q.py:2)"),
     # raised inside attnbench: the plugin's own line, not options.py's (before)
     ("badopt.py", "--plugin badopt.py: import failed: TypeError: option 'scale': type must be one of int, float, "
                   "bool, str (at {tmp}/badopt.py:2)"),
     ("./" + "a" * 300 + ".py", f"--plugin ./{'a' * 300}.py: File name too long"),
     ("./" + "a" * 300, f"--plugin ./{'a' * 300}: File name too long")],
)
def test_a_plugin_that_does_not_import_is_one_clear_line(target, message, tmp_path):
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "deep.py").write_text("import helper_q\n")  # the failing line is in a module it imports
    (tmp_path / "helper_q.py").write_text("CONFIG = 'x'\nraise ValueError('bad config value')\n")
    (tmp_path / "badopt.py").write_text("from attnbench import Option\nSCALE = Option('scale', list, [1])\n")
    result = bench("ls", "variants", "--plugin", target, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"bench: error: {message.format(tmp=tmp_path)}")
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- --plugin NAME, recorded for --resume
PACKAGE = {  # a package beside the user, with relative imports: `--plugin my_pkg.attn`
    "__init__.py": "",
    "base.py": "from attnbench.variants.multi_head import MultiHeadAttention as Base\n",
    "attn.py": "from attnbench import register_variant\nfrom .base import Base\n\n"
               "@register_variant('pkg-copy')\nclass Copy(Base):\n    pass\n",
}


def test_a_run_with_plugins_named_from_its_directory_resumes_from_another(tmp_path):
    src, elsewhere, out = tmp_path / "src", tmp_path / "elsewhere", tmp_path / "run"
    (src / "my_pkg").mkdir(parents=True)
    elsewhere.mkdir()
    (src / "my_attention.py").write_text(GOOD_MODULE.replace("\n    ", "\n"))
    for name, text in PACKAGE.items():
        (src / "my_pkg" / name).write_text(text)
    started = bench("run", "--plugin", "my_attention", "--plugin", "my_pkg.attn", "--profile", "smoke",
                    "--variants", "mha-copy,pkg-copy", "--tasks", "copy", "--lengths", "16", "--kinds", "accuracy",
                    "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out), cwd=src)
    assert started.returncode == 0, started.stderr
    # where the plugins were found: the names keep the module's identity, the package its relative imports
    recorded = [str(src.resolve() / "my_attention"), str(src.resolve() / "my_pkg.attn")]
    assert json.loads((out / "env.json").read_text())["options"]["plugins"] == recorded
    cells = out / "cells.jsonl"
    lines = cells.read_text().splitlines()
    assert len(lines) == 2
    cells.write_text(lines[0] + "\n")  # as if killed after the first cell
    resumed = bench("run", "--resume", str(out), cwd=elsewhere)  # before: No module named 'my_attention'
    assert resumed.returncode == 0, resumed.stderr
    assert f"--plugin {recorded[0]} --plugin {recorded[1]}" in resumed.stderr
    assert cells.read_text().splitlines()[0] == lines[0] and len(cells.read_text().splitlines()) == 2


def test_a_plugin_module_is_recorded_by_name_where_it_imports_without_the_current_directory(
    tmp_path, monkeypatch, sandbox
):
    lib, here = tmp_path / "lib", tmp_path / "here"
    lib.mkdir()
    here.mkdir()
    for folder, name in ((lib, "rec_installed"), (here, "rec_beside")):
        text = GOOD_MODULE.replace("\n    ", "\n").replace('"mha-copy", aliases=("copycat",)', repr(name))
        (folder / f"{name}.py").write_text(text)
    monkeypatch.setattr(sys, "path", [str(lib), *sys.path])  # as site-packages or PYTHONPATH would put it
    monkeypatch.chdir(here)
    try:
        import_plugin("rec_installed")
        import_plugin("rec_beside")
        assert recorded_plugin("rec_installed") == "rec_installed"
        beside = str(here.resolve() / "rec_beside")
        assert recorded_plugin("rec_beside") == beside
        assert recorded_plugin(beside) == beside  # a resume records what it was given
        assert recorded_plugin("rec_beside.py") == str(here.resolve() / "rec_beside.py")
        assert recorded_plugin("json") == "json"
    finally:
        for name in ("rec_installed", "rec_beside"):
            sys.modules.pop(name, None)


def test_a_plugin_file_imports_the_modules_beside_it_as_python_file_would(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "sibling_base.py").write_text("from attnbench.variants.multi_head import MultiHeadAttention as Base\n")
    (folder / "uses_sibling.py").write_text("from attnbench import register_variant\nfrom sibling_base import Base\n\n"
                                            "@register_variant('sibling-mha')\nclass Layer(Base):\n    pass\n")
    result = bench("ls", "variants", "sibling-*", "--plugin", "plugin/uses_sibling.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sibling-mha" in result.stdout


def test_two_plugin_files_whose_folders_hold_a_module_of_one_name_are_warned_of(tmp_path):
    for folder, scale in (("a", 1.0), ("b", 0.5)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "shared_helpers.py").write_text(f"SCALE = {scale}\n")
        (tmp_path / folder / f"attn_{folder}.py").write_text(
            "from attnbench import register_variant\nfrom attnbench.variants.multi_head import MultiHeadAttention\n"
            f"from shared_helpers import SCALE\n\n@register_variant('helper-{folder}')\n"
            "class Layer(MultiHeadAttention):\n    pass\n")
    result = bench("ls", "variants", "helper-*", "--plugin", "a/attn_a.py", "--plugin", "b/attn_b.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (f"bench: warning: --plugin b/attn_b.py: a module shared_helpers is already imported from "
            f"{(tmp_path / 'a' / 'shared_helpers.py').resolve()}, so an import of shared_helpers in it gets that one, "
            f"not {(tmp_path / 'b' / 'shared_helpers.py').resolve()}; rename one") in result.stderr
    assert result.stderr.count("warning") == 1  # plugin a's own folder: no word


def test_a_module_in_a_folder_that_another_of_its_name_shadows_is_refused(tmp_path, sandbox):
    """`DIR/NAME` must import NAME from DIR: two plugins of one name, or one named like a standard
    module, would otherwise import the one Python already holds, silently."""
    for folder, variant in (("a", "copy-a"), ("b", "copy-b")):
        (tmp_path / folder).mkdir()
        text = GOOD_MODULE.replace("\n    ", "\n").replace('"mha-copy", aliases=("copycat",)', repr(variant))
        (tmp_path / folder / "shadowed_attn.py").write_text(text)
    (tmp_path / "a" / "token.py").write_text("raise SystemExit('not the standard token module')\n")
    try:
        import_plugin(str(tmp_path / "a" / "shadowed_attn"))
        with pytest.raises(PluginError, match=f"a module shadowed_attn is already imported from {tmp_path / 'a'}"):
            import_plugin(str(tmp_path / "b" / "shadowed_attn"))
        with pytest.raises(PluginError, match="a module token is already imported from .*token.py, not "):
            import_plugin(str(tmp_path / "a" / "token"))
        with pytest.raises(PluginError, match="no such file, nor a folder .*/gone holding module attn"):
            import_plugin(str(tmp_path / "gone" / "attn"))  # a recorded folder since moved
    finally:
        sys.modules.pop("shadowed_attn", None)
        for folder in ("a", "b"):
            while str(tmp_path / folder) in sys.path:
                sys.path.remove(str(tmp_path / folder))


def test_a_run_records_its_installed_plugins_and_their_source(tmp_path, monkeypatch, sandbox, make_distribution):
    """Before: env.json recorded --plugin sources only, so a run whose variant came from an installed
    package could not tell which code, or which version of it, ran."""
    from attnbench.plugins import installed_plugins

    make_distribution(tmp_path, "attn-mixed", {"good": "attn_recorded", "exploding": "attn_exploding:Layer"},
                      {"attn_recorded": GOOD_MODULE, "attn_exploding": "import definitely_not_installed_module\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning):
        sandbox.load_plugins(reload=True)
    recorded = installed_plugins()
    good, broken = recorded["variant:good (attn-mixed)"], recorded["variant:exploding (attn-mixed)"]
    source = hashlib.sha256(b"attn_recorded.py\0" + (tmp_path / "attn_recorded.py").read_bytes()).hexdigest()
    assert good == {"distribution": "attn-mixed", "version": "0.1", "module": "attn_recorded", "sha256": source,
                    "error": None}
    assert broken["sha256"] is None and broken["error"].startswith("ModuleNotFoundError: ")
    (tmp_path / "attn_recorded.py").write_text(textwrap.dedent(GOOD_MODULE) + "# edited\n")  # an editable install, edited
    assert installed_plugins()["variant:good (attn-mixed)"]["sha256"] != source


def test_bench_check_of_a_glob_fails_on_a_matching_plugin_that_never_loaded(tmp_path, monkeypatch, sandbox,
                                                                             make_distribution, bench_output):
    """Before: `--variants all` failed on it, `--variants '*'` passed without a word."""
    make_distribution(tmp_path, "attn-broken", {"mine-exploding": "attn_exploding:Layer", "good": "attn_globbed"},
                      {"attn_exploding": "import definitely_not_installed_module\n", "attn_globbed": GOOD_MODULE})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning):
        sandbox.load_plugins(reload=True)
    for variants in ("*", "m*", "all"):
        code, out, _ = bench_output("check", "--variants", variants, "--checks", "shape")
        assert code == 1 and "its plugin failed to load: ModuleNotFoundError" in " ".join(out.split()), variants
    code, out, err = bench_output("check", "--variants", "mine-*", "--checks", "shape")  # it matches nothing loaded
    assert code == 2 and err.startswith("bench: error: --variants: no variant matches 'mine-*'; 'mine-exploding' "
                                        "matches it, but its plugin failed to load: ModuleNotFoundError")
    code, out, _ = bench_output("check", "--variants", "mha-*", "--checks", "shape")
    assert code == 0 and "failed to load" not in out  # the glob matches no unloaded plugin


def test_installed_plugins_of_one_name_are_each_recorded_and_a_package_is_hashed_whole(tmp_path, monkeypatch,
                                                                                        sandbox, make_distribution):
    """Before: the refused one of two packages registering `foo` overwrote the one whose code ran,
    and only the entry point's own module was hashed, so an edit to a module it imports went unseen."""
    from attnbench.plugins import installed_plugins

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    make_distribution(first, "dist-a", {"foo": "attn_foo_a"}, {"attn_foo_a": GOOD_MODULE.replace("mha-copy", "foo")
                                                               .replace(', aliases=("copycat",)', "")})
    make_distribution(second, "dist-b", {"foo": "attn_foo_b"}, {"attn_foo_b": GOOD_MODULE.replace("mha-copy", "foo")
                                                                .replace(', aliases=("copycat",)', "")})
    package = tmp_path / "c" / "attn_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "kernels.py").write_text("SCALE = 1.0\n")
    (package / "variants.py").write_text(textwrap.dedent(GOOD_MODULE).replace("mha-copy", "pkg-v").replace(
        ', aliases=("copycat",)', "") + "from attn_pkg.kernels import SCALE\n")
    make_distribution(tmp_path / "c", "attn-pkg", {"pkg-v": "attn_pkg.variants"}, {})
    for root in (first, second, tmp_path / "c"):
        monkeypatch.syspath_prepend(str(root))
    with pytest.warns(PluginWarning, match="variant name 'foo' is already taken"):
        sandbox.load_plugins(reload=True)
    recorded = installed_plugins()
    loaded, refused = sorted((recorded["variant:foo (dist-a)"], recorded["variant:foo (dist-b)"]),
                             key=lambda ep: ep["error"] is not None)  # which loads first: the order on sys.path
    assert loaded["error"] is None and loaded["sha256"] and refused["sha256"] is None
    assert "already taken" in refused["error"] and refused["error"].endswith(f" of {refused['distribution']}]")
    before = recorded["variant:pkg-v (attn-pkg)"]["sha256"]
    (package / "kernels.py").write_text("SCALE = 2.0\n")  # a module the entry point's module imports
    assert installed_plugins()["variant:pkg-v (attn-pkg)"]["sha256"] != before
