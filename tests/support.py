"""Helpers the test modules share (imported, not collected: the name does not start with test_)."""

from __future__ import annotations


def one_error_line(err: str) -> str:
    """The single stderr line of a refused command (and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert "Traceback" not in err
    return lines[0]
