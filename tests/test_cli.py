"""The `bench` command line: help with examples, listing, checking, and one-line errors with exit 2."""

from __future__ import annotations

import pytest

from attnbench.cli import main


def bench(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


@pytest.mark.parametrize("command", [[], ["ls"], ["check"]])
def test_help_shows_an_example(capsys, command):
    code, out, _ = bench(capsys, *command, "--help")
    assert code == 0 and "Example" in out and "bench " in out


def test_ls_variants_lists_every_builtin_with_its_capabilities(capsys):
    code, out, _ = bench(capsys, "ls", "variants")
    assert code == 0
    for name in ("additive", "dot-product", "multi-head", "local", "linear"):
        assert name in out
    local_row = next(line for line in out.splitlines() if "│ local" in line)
    assert "n*w" in local_row and "window: int = 128" in local_row and "cross" not in local_row


def test_ls_glob(capsys):
    code, out, _ = bench(capsys, "ls", "variants", "lin*")
    assert code == 0 and "linear" in out and "local" not in out


def test_check_passes_for_builtins_and_prints_a_table(capsys):
    code, out, _ = bench(capsys, "check", "--variants", "local(window=4),dot", "--checks", "reference,causal")
    assert code == 0, out
    assert out.count("PASS") == 4 and "local(window=4)" in out and "all 4 checks passed" in out


def test_check_exits_1_and_names_the_failure(capsys, tmp_path, sandbox):
    bad = tmp_path / "bad_attention.py"
    bad.write_text(
        "from torch import nn\n"
        "from attnbench import VariantSpec, register_variant\n"
        "@register_variant('nan-attention')\n"
        "class NaNAttention(nn.Module):\n"
        "    spec = VariantSpec(complexity='n', supports_cross=False, supports_causal=False,\n"
        "                       supports_padding_mask=False, returns_weights=False)\n"
        "    def __init__(self, d_model, n_heads):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(d_model, d_model)\n"
        "    def forward(self, x, context=None, **kwargs):\n"
        "        return self.proj(x) * float('nan'), None\n"
    )
    code, out, _ = bench(capsys, "check", "--variants", "nan-attention", "--plugin", str(bad))
    assert code == 1
    assert "FAIL" in out and "non-finite output" in out and "checks failed" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chek"], "no such command 'chek'; did you mean 'check'?"),
        (["check", "--variants", "lcoal"], "unknown variant 'lcoal'; did you mean 'local'"),
        (["check", "--variants", "local(window=-3)"], "local: window must be a positive int, got -3"),
        (["check", "--variants", "local(window=abc)"], "local: window must be a positive int, got 'abc'"),
        (["check", "--variants", "local(size=3)"], "local: unknown option 'size'"),
        (["check", "--variants", "multi-head(window=3)"], "multi-head: takes no options"),
        (["check", "--variants", ""], "--variants: empty list"),
        (["check", "--checks", "refrence"], "unknown check 'refrence'; did you mean 'reference'?"),
        (["check", "--device", "tpu"], "Invalid value for '--device'"),
        (["ls", "variants", "zzz*"], "no variant matches 'zzz*'"),
        (["ls", "gizmos"], "Invalid value for 'WHAT'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, _, err = bench(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:") and message in lines[0], err
    assert "Traceback" not in err


def test_device_cuda_without_cuda_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = bench(capsys, "check", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err
