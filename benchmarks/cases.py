"""What the benchmark runs: one `Case` per attention (variant + options, or the raw SDPA baseline),
and for each case the implementations timed side by side (core, layer, naive reference, peer;
a case with `same_as` shares the naive and peer rows of that case).

Shapes follow issue 8: H = 8 heads of d_head = 64 (d_model = 512); `dot-product` is one head of
width 512; `additive` runs with `heads=8` so its heads have the same d_head as the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.variants.compiled import COMPILED

HEADS = 8
D_HEAD = 64
D_MODEL = HEADS * D_HEAD

# implementation kinds, in the order they are run and shown
SDPA, CORE, LAYER, NAIVE, PEER = "sdpa", "core", "layer", "naive", "peer"


@dataclass(frozen=True)
class Case:
    """One attention to benchmark: a registered variant with options, or the SDPA baseline."""

    label: str
    variant: str | None  # None: raw `scaled_dot_product_attention`, the full-attention limit
    options: tuple[tuple[str, object], ...] = ()
    causal: bool = False
    heads: int = HEADS  # heads of the per-head (b h n d) core inputs
    complexity: str = "n^2"  # time complexity of the core: n^2 | n*w | n
    peer: str | None = None  # name of the peer in `peers.PEERS`
    peer_options: tuple[tuple[str, object], ...] = ()
    family: str = "softmax"  # which row reference verifies it: softmax | linear | additive
    max_tokens: int | None = None  # timed while batch × n ≤ this (beyond: only a memory probe, if any)
    # the case computing the same maths by another kernel: where both run, this one takes its naive
    # reference and peer rows from that one (timed in the same rounds) instead of timing them twice
    same_as: str | None = None

    @property
    def opts(self) -> dict:
        """The variant's options as a dict."""
        return dict(self.options)

    @property
    def compiled(self) -> bool:
        """Whether the variant runs a torch.compile'd kernel (`kernel=compiled`)."""
        return self.opts.get("kernel") == COMPILED

    @property
    def runs_sdpa(self) -> bool:
        """Whether the core is torch's scaled_dot_product_attention (whose kernel `bench perf` records)."""
        return self.variant in (None, "multi-head", "dot-product")

    @property
    def baseline(self) -> str:
        """Label of the SDPA case this case's times are compared with."""
        if self.heads == 1:
            return "sdpa(h=1)"
        return "sdpa(causal)" if self.causal else "sdpa"


CASES: tuple[Case, ...] = (
    Case("sdpa", None),
    Case("sdpa(causal)", None, causal=True),
    Case("sdpa(h=1)", None, heads=1),
    Case("multi-head", "multi-head"),
    Case("dot-product", "dot-product", heads=1),
    Case("local(window=128)", "local", (("window", 128),), complexity="n*w",
         peer="local-attention", peer_options=(("window", 128),)),
    Case("local(window=256)", "local", (("window", 256),), complexity="n*w",
         peer="local-attention", peer_options=(("window", 256),)),
    # FlexAttention over the band's tiles (variants/local_flex.py): issue 8's block-sparse path for CUDA
    Case("local(window=128, kernel=compiled)", "local", (("window", 128), ("kernel", "compiled")), complexity="n*w",
         peer="local-attention", peer_options=(("window", 128),), same_as="local(window=128)"),
    Case("local(window=256, kernel=compiled)", "local", (("window", 256), ("kernel", "compiled")), complexity="n*w",
         peer="local-attention", peer_options=(("window", 256),), same_as="local(window=256)"),
    Case("linear", "linear", complexity="n", family="linear", peer="linear-attention-transformer"),
    Case("linear(causal)", "linear", causal=True, complexity="n", family="linear",
         peer="linear-attention-transformer"),
    # the same maths fused by torch.compile (variants/compiled.py): timed beside the eager kernel
    Case("linear(kernel=compiled)", "linear", (("kernel", "compiled"),), complexity="n", family="linear",
         peer="linear-attention-transformer", same_as="linear"),
    Case("linear(causal, kernel=compiled)", "linear", (("kernel", "compiled"),), causal=True, complexity="n",
         family="linear", peer="linear-attention-transformer", same_as="linear(causal)"),
    # additive forms a (b, h, chunk, m, d) block per chunk: 0.11-0.14 s per call at n = 1024 on CPU,
    # 0.49-0.59 s at 2048 (2 threads, the 4165781-r5 and 2d11f2b-r2 runs; 0.7 and 2.8 s with ATen's
    # tanh), and glibc's heap fragments under it (RSS far above the live tensors), so it is timed up
    # to batch × n = 2048 (a 2-thread run was
    # OOM-killed at 24 GiB RSS, at n = 4096 and at batch 4, n = 2048); its memory at n = 4096 is
    # probed once, at the end of the run (PerfConfig.memory_probes)
    Case("additive(heads=8)", "additive", (("heads", HEADS),), family="additive", max_tokens=2048),
)


def select_cases(variants: list[str] | None, labels: tuple[str, ...] | None = None) -> list[Case]:
    """The cases of the named variants (None or ['all']: every case), or given `labels` the cases
    of those labels only; baselines always included."""
    if labels is not None:
        chosen = [c for c in CASES if c.label in labels]
    elif not variants or variants == ["all"]:
        return list(CASES)
    else:
        wanted = set(variants)
        chosen = [c for c in CASES if c.variant in wanted or c.label in wanted]
    return _with_baselines(chosen, CASES)


def cases_at(cases: list[Case], cells: tuple[tuple[str, int], ...] | None, n: int) -> list[Case]:
    """Which of `cases` run at length n: all without `cells`, else those that `cells` (case label,
    n) names at n, and the SDPA baselines they are compared with."""
    if cells is None:
        return cases
    named = {label for label, at in cells if at == n}
    return _with_baselines([c for c in cases if c.label in named], cases)


def _with_baselines(chosen: list[Case], among: list[Case]) -> list[Case]:
    """`chosen` and the SDPA baseline cases of `among` they are compared with, in `among`'s order."""
    baselines = {c.baseline for c in chosen}
    return [c for c in among if c in chosen or (c.variant is None and c.label in baselines)]
