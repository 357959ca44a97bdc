"""The conditions of a run, written to env.json so that no number is read without them."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import attnbench
from attnbench.runner.execute import DTYPES
from attnbench.runner.measure import matmul_peak



def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, platform elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: str) -> str:
    """What a benchmark row's `machine` names: the GPU where `device` is CUDA, else the CPU model."""
    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else cpu_model()


REVISION_VARIABLE = "ATTNBENCH_REVISION"


def git_sha() -> str | None:
    """The commit of the attnbench source tree, when it is a git checkout; $ATTNBENCH_REVISION
    where it is set, for a copy of the tree whose .git is not its own (benchmarks/cuda_session.sh
    sets it from REVISION: the GPU machine's copy carried a .git of an older commit)."""
    if os.environ.get(REVISION_VARIABLE):
        return os.environ[REVISION_VARIABLE]
    root = Path(attnbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def collect(*, device: str, dtype: str, threads: int, argv: list[str] | None = None,
            measure_peak: bool = True) -> dict[str, Any]:
    """env.json: versions, machine, device, threads, git sha, argv and the measured matmul peak."""
    torch.set_num_threads(threads)
    env: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attnbench": attnbench.__version__,
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
        "dtype": dtype,
        "cuda_device": torch.cuda.get_device_name() if device == "cuda" else None,
        "cuda_version": torch.version.cuda if device == "cuda" else None,
        "argv": argv if argv is not None else sys.argv,
    }
    if measure_peak:
        env["matmul_peak_flops"] = matmul_peak(device=device, dtype=DTYPES[dtype])
        env["matmul_peak_dtype"] = dtype
    return env
