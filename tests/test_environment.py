"""runner/environment.py: the commit a run and a perf page record."""

from __future__ import annotations

import re

from attnbench.runner.environment import REVISION_VARIABLE, git_sha


def test_git_sha_is_this_checkout_s_commit_unless_the_revision_variable_names_one(monkeypatch):
    monkeypatch.delenv(REVISION_VARIABLE, raising=False)
    own = git_sha()
    # a clone has its .git; an installed copy without one reports None
    assert own is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", own), own
    # a copy of the tree whose .git is not its own (the GPU machine's) is told its commit
    monkeypatch.setenv(REVISION_VARIABLE, "b8013b1")
    assert git_sha() == "b8013b1"
    monkeypatch.setenv(REVISION_VARIABLE, "")
    assert git_sha() == own
