"""GPUs' rated dense tensor-core peaks, from their makers' data sheets: issue 8 asks for bf16 FLOP/s
on CUDA as a fraction of the GPU's dense peak. The page's other fraction, of the square matmul
timed in the same rounds, is measured; this one is only as good as the data sheet and the name
match. Dense: without 2:4 sparsity (the sheets' headline numbers are often twice these).
"""

from __future__ import annotations

# (a substring of torch.cuda.get_device_name(), {dtype: dense TFLOP/s}), most specific first: a
# name that matches an entry with no numbers (NVL parts, whose sheets differ) has no rated peak
RATED_DENSE_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("NVL", {}),
    ("H100 PCIe", {"bfloat16": 756.5, "float16": 756.5}),
    ("H100", {"bfloat16": 989.4, "float16": 989.4}),  # SXM5 ("H100 80GB HBM3")
    ("H200", {"bfloat16": 989.4, "float16": 989.4}),  # SXM
    ("A100", {"bfloat16": 312.0, "float16": 312.0}),
)


def rated_peak(machine: str, dtype: str) -> float | None:
    """The rated dense FLOP/s of GPU `machine` in `dtype` ("bfloat16", "float16"), or None when
    the table does not know it."""
    for fragment, peaks in RATED_DENSE_TFLOPS:
        if fragment in machine:
            tflops = peaks.get(dtype)
            return None if tflops is None else tflops * 1e12
    return None
