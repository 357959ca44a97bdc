"""The benchmark loop: for each (batch, n), build the inputs, verify every implementation against a
reference (and measure its peak memory in that same call), then time the verified ones with
`runner.measure.time_call`, interleaved across implementations `repeat` times, with a square
matmul timed in the same rounds: the peak that FLOP/s fractions at that length are taken against.

Each (case, implementation, batch, n) gives one row (`ROW_COLUMNS`). An implementation whose output
disagrees with the reference is recorded as `mismatch` and never timed; one that would take too
long or too much memory is recorded as `skipped: …` with the reason; a peer whose package is
absent is `not installed`. Forward pass only (inference mode), the attention core on per-head
(b h n d) tensors and the whole layer (projections included) on (b n d_model).
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.benchmarks import references as refs
from attnbench.benchmarks.cases import CASES, CORE, D_MODEL, LAYER, NAIVE, PEER, SDPA, Case, cases_at, select_cases
from attnbench.benchmarks.peers import PEERS, PeerMissing
from attnbench.benchmarks.rated_peaks import rated_peak
from attnbench.benchmarks.revision import build_at, revision_classes
from attnbench.errors import AttnbenchError, UnsupportedError
from attnbench.runner.environment import git_sha, machine_name
from attnbench.runner.store import threads_text
from attnbench.runner import heap as glibc_heap
from attnbench.runner.heap import CACHED, HEAPS, STEADY_BYTES, set_heap
from attnbench.runner.measure import (
    CPU_ALLOCATOR_METHOD, CPU_EAGER_PATH_METHOD, MATMUL_SIZE, TOLERANCE, count_flops, is_oom, matmul_peak, peak_memory,
    relative_error, sdpa_kernels, time_call,
)
from attnbench.variants.base import build_variant
from attnbench.variants.caches import forget_caches
from attnbench.variants.graphs import without_graphs

FULL_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (256, 512, 1024, 2048)
CALIBRATION_N = 256  # naive memory is measured at this length and half of it (`NaiveMemory`)

ROW_COLUMNS = (
    "case", "impl", "variant", "options", "causal", "batch", "heads", "d_head", "n", "dtype",
    "device", "status", "verified", "rel_err", "tolerance", "median_s", "iqr_s", "min_s", "max_s",
    "repeats", "runs", "round_medians_s", "ratio_vs_sdpa", "ratio_vs_sdpa_min", "ratio_vs_sdpa_max",
    "ratio_vs_peer", "ratio_vs_peer_min", "ratio_vs_peer_max", "scaling_ratio", "scaling_span",
    "peak_bytes", "mem_method", "sdpa_kernel", "flops", "flops_per_s", "peak_fraction", "matmul_peak_flops",
    "rated_peak_fraction",
    "machine", "threads", "heap", "torch", "peer_version", "git_sha",
)
ROUND_SEPARATOR = ";"  # between the per-round medians of `round_medians_s`


@dataclass(frozen=True)
class PerfConfig:
    """What one benchmark run measures."""

    variants: tuple[str, ...] = ("all",)
    lengths: tuple[int, ...] = FULL_LENGTHS
    batches: tuple[int, ...] = (1, 4)
    batched_max_n: int = 4096  # batch > 1 runs only up to this length (time)
    repeat: int = 3
    min_run_time: float = 0.2
    max_cell_s: float = 45.0  # predicted (1 + repeat) calls over this: time it no further
    naive_limit_gib: float = 2.0  # the naive reference is skipped above this much memory
    # (case, n) whose core runs once for memory (and verification) even when too slow to time;
    # at the end of the run, with glibc's mmap threshold pinned at 4 MiB on CPU
    memory_probes: tuple[tuple[str, int], ...] = (("additive(heads=8)", 4096),)
    device: str = "cpu"
    # CPU: "cached" pins glibc's mmap threshold at 1 GiB before anything is timed, so big tensors
    # are reused from the heap as a caching allocator would; "glibc" keeps its defaults
    heap: str = CACHED
    # a git revision whose variant code is timed beside the working tree's (impls `core@<rev>`, `layer@<rev>`)
    against: str | None = None
    cases: tuple[str, ...] | None = None  # only the cases of these labels (and their SDPA baselines)
    # only these (case label, n) cells, at every batch (and their SDPA baselines at that n): a length
    # none names is not run, nor a memory probe none names
    cells: tuple[tuple[str, int], ...] | None = None
    dtype: torch.dtype | None = None  # None: fp32 on CPU, bf16 on CUDA
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.heap not in HEAPS:
            raise AttnbenchError(f"heap: {self.heap!r} is not one of {', '.join(HEAPS)}")

    def resolved_dtype(self) -> torch.dtype:
        """fp32 on CPU, bf16 on CUDA unless given."""
        if self.dtype is not None:
            return self.dtype
        return torch.bfloat16 if torch.device(self.device).type == "cuda" else torch.float32


@dataclass
class Candidate:
    """One implementation at one shape: what to call and how to check its output."""

    case: Case
    impl: str
    fn: Callable[[], Tensor] | None
    check: Callable[[Tensor], float] | None  # output → relative error against the reference
    status: str = "pending"
    meta_fn: Callable[[], Tensor] | None = None  # the same call on meta tensors, for FLOPs
    peer_version: str | None = None
    compiled: bool = False  # a torch.compile'd kernel: its first call compiles (seconds)
    row: dict = field(default_factory=dict)
    times: list = field(default_factory=list)

    @property
    def calls_sdpa(self) -> bool:
        """Whether this call is torch's scaled_dot_product_attention: raw SDPA, or a core built on it."""
        return self.case.runs_sdpa and self.impl in (CORE, SDPA)


# ---------------------------------------------------------------------------- references
def rows_reference(case: Case, layer) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """(q, k, v, rows) → the naive reference's output rows for this case's core, in fp32 like the
    q, k, v the checks pass it (the layer's own parameters may be bf16: they are taken in fp32)."""
    window = case.opts.get("window")
    if case.family == "linear":
        return lambda q, k, v, rows: refs.linear_rows(q, k, v, rows, causal=case.causal)
    if case.family == "additive":
        score_vector = layer.score_vector.detach().float()
        return lambda q, k, v, rows: refs.additive_rows(q, k, v, rows, score_vector, causal=case.causal)
    return lambda q, k, v, rows: refs.softmax_rows(q, k, v, rows, causal=case.causal, window=window)


def peer_reference(case: Case) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The peer's own definition, row by row (see peers.py for how it differs from the variant)."""
    if case.peer == "local-attention":
        window = dict(case.peer_options)["window"] + 1  # exact_windowsize: |i − j| ≤ w
        return lambda q, k, v, rows: refs.softmax_rows(q, k, v, rows, causal=case.causal, window=window)
    return lambda q, k, v, rows: refs.peer_linear_rows(q, k, v, rows, causal=case.causal)


def core_check(ref: Callable, q: Tensor, k: Tensor, v: Tensor, rows: Tensor) -> Callable[[Tensor], float]:
    """Compare a (b h n e) output's sampled rows with the reference rows (in fp32)."""
    def check(out: Tensor) -> float:
        want = ref(q.float(), k.float(), v.float(), rows)
        return relative_error(out[:, :, rows.to(out.device)], want)
    return check


def layer_check(ref: Callable, layer, x: Tensor, rows: Tensor) -> Callable[[Tensor], float]:
    """Compare a (b n d_model) layer output's rows with out_proj(reference core rows)."""
    def check(out: Tensor) -> float:
        ref_layer = copy.deepcopy(layer).float()
        q, k, v = ref_layer.project(x.float(), None)
        core = ref(q, k, v, rows)
        want = ref_layer.out_proj(rearrange(core, "b h n d -> b n (h d)"))
        return relative_error(out[:, rows.to(out.device)], want)
    return check


# ------------------------------------------------------------------------------ building
def naive_entries(case: Case, batch: int, n: int) -> int:
    """Elements of the biggest block the naive reference forms: (b h n m), or (b h n m d) for additive."""
    entries = batch * case.heads * n * n
    return entries * (D_MODEL // case.heads) if case.family == "additive" else entries


def build_candidates(
    cases: list[Case], batch: int, n: int, cfg: PerfConfig, naive_memory: dict[str, NaiveMemory],
    at_rev: tuple[str, dict[str, type]] | None = None,
) -> list[Candidate]:
    """Every (case, implementation) at (batch, n), on the same inputs; with `at_rev` = (short hash,
    {variant: class at that revision}), also each variant's core and layer at that revision
    (`core@<hash>`, `layer@<hash>`)."""
    device, dtype = cfg.device, cfg.resolved_dtype()
    gen = torch.Generator().manual_seed(cfg.seed + n + 7919 * batch)
    qkv = {}
    for heads in sorted({c.heads for c in cases}):
        d = D_MODEL // heads
        qkv[heads] = tuple(torch.randn(batch, heads, n, d, generator=gen).to(device, dtype) for _ in range(3))
    x = torch.randn(batch, n, D_MODEL, generator=gen).to(device, dtype)
    rows = refs.sample_rows(n)
    meta = lambda t: torch.empty_like(t, device="meta")  # noqa: E731
    labels = {c.label for c in cases}
    out: list[Candidate] = []
    for case in cases:
        q, k, v = qkv[case.heads]
        qm, km, vm = meta(q), meta(k), meta(v)
        if case.variant is None:
            sdpa = lambda q, k, v, c=case.causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)  # noqa: E731
            ref = refs.softmax_rows if not case.causal else (
                lambda q, k, v, r: refs.softmax_rows(q, k, v, r, causal=True))
            out.append(Candidate(case, SDPA, lambda f=sdpa, q=q, k=k, v=v: f(q, k, v),
                                 core_check(ref, q, k, v, rows), meta_fn=lambda f=sdpa, m=(qm, km, vm): f(*m)))
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            try:
                layer = build_variant(case.variant, d_model=D_MODEL, n_heads=case.heads, **case.opts)
            except UnsupportedError as exc:  # e.g. kernel=compiled without a C++ compiler: this case only
                out.append(Candidate(case, CORE, None, None, status=f"unavailable: {exc}"))
                continue
        layer = layer.to(device=device, dtype=dtype).eval()
        meta_layer = copy.deepcopy(layer).to("meta")
        ref = rows_reference(case, layer)
        core = lambda lay, q, k, v, c=case.causal: lay.core(q, k, v, None, c, False)[0]  # noqa: E731
        out.append(Candidate(case, CORE, lambda f=core, q=q, k=k, v=v, lay=layer: f(lay, q, k, v),
                             core_check(ref, q, k, v, rows),
                             meta_fn=lambda f=core, lay=meta_layer, m=(qm, km, vm): f(lay, *m),
                             compiled=case.compiled))
        whole = lambda lay, x, c=case.causal: lay(x, causal=c)[0]  # noqa: E731
        at = (_at_rev(case, at_rev, cfg, core, whole, (q, k, v), x, rows, meta=((qm, km, vm), meta(x)))
              if at_rev and case.variant in at_rev[1] else [])
        out += at[:1]  # core@<hash> beside the core, layer@<hash> beside the layer
        out.append(Candidate(case, LAYER, lambda f=whole, lay=layer: f(lay, x),
                             layer_check(ref, layer, x, rows),
                             meta_fn=lambda f=whole, lay=meta_layer: f(lay, meta(x)), compiled=case.compiled))
        out += at[1:]
        if case.same_as in labels:  # its naive and peer rows are that case's, timed in these rounds
            continue
        naive = lambda lay, q, k, v, c=case.causal: lay.reference_core(q, k, v, None, c)[0]  # noqa: E731
        cand = Candidate(case, NAIVE, lambda f=naive, lay=layer, q=q, k=k, v=v: f(lay, q, k, v),
                         core_check(ref, q, k, v, rows),
                         meta_fn=lambda f=naive, lay=meta_layer, m=(qm, km, vm): f(lay, *m))
        if case.label in naive_memory:
            estimate = naive_memory[case.label]
            need = estimate.bytes(case, batch, n)
            # an estimate until the call runs (verify() then records the measured peak)
            cand.row["peak_bytes"] = int(need)
            cand.row["mem_method"] = estimate.method()
            if need > cfg.naive_limit_gib * 2**30:
                cand.fn, cand.status = None, f"skipped: would need {_figure(need / 2**30, 2)} GiB (> {cfg.naive_limit_gib:g} GiB limit)"
        out.append(cand)
        if case.peer:
            peer = PEERS[case.peer]
            from attnbench.benchmarks.peers import version

            try:
                fn = peer.make(causal=case.causal, **dict(case.peer_options))
            except PeerMissing:
                out.append(Candidate(case, PEER, None, None, status="not installed"))
                continue
            out.append(Candidate(case, PEER, lambda f=fn, q=q, k=k, v=v: f(q, k, v),
                                 core_check(peer_reference(case), q, k, v, rows),
                                 meta_fn=lambda f=fn, m=(qm, km, vm): f(*m), peer_version=version(case.peer)))
    return out


def _at_rev(case: Case, at_rev: tuple[str, dict[str, type]], cfg: PerfConfig, core: Callable, whole: Callable,
            qkv: tuple, x: Tensor, rows: Tensor, *, meta: tuple[tuple, Tensor]) -> list[Candidate]:
    """The variant's core and layer as they were at REV (`core@<hash>`, `layer@<hash>`), or two
    Candidates that say why not. The layer at REV is REV's module's class: its own projections'
    layout and forward, over the working tree's shared base class. `meta`: the inputs' meta twins
    ((q, k, v), x), for the FLOP counts."""
    labels = f"{CORE}@{at_rev[0]}", f"{LAYER}@{at_rev[0]}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            old = build_at(at_rev[1][case.variant], case.variant, D_MODEL, case.heads, case.opts)
        except AttnbenchError as exc:  # an option that REV's class lacks (e.g. kernel=compiled)
            return [Candidate(case, label, None, None, status=f"unavailable: {exc}") for label in labels]
    old = old.to(device=cfg.device, dtype=cfg.resolved_dtype()).eval()
    meta_old = copy.deepcopy(old).to("meta")
    q, k, v = qkv
    meta_qkv, meta_x = meta
    ref = rows_reference(case, old)
    return [
        Candidate(case, labels[0], lambda: core(old, q, k, v), core_check(ref, q, k, v, rows),
                  meta_fn=lambda: core(meta_old, *meta_qkv), compiled=case.compiled),
        Candidate(case, labels[1], lambda: whole(old, x), layer_check(ref, old, x, rows),
                  meta_fn=lambda: whole(meta_old, meta_x), compiled=case.compiled),
    ]


class NaiveMemory(NamedTuple):
    """A naive reference's peak memory as `per_entry` bytes per entry of its biggest block
    (`naive_entries`) plus `per_position` bytes per batch element and position (its O(n·d) tensors:
    inputs it copies, its output), fitted exactly to the peaks measured at the two lengths `at`.

    One rate per entry measured at n = 256 alone read 12 % high at long n, where the O(n·d) part
    it had folded in no longer matters (9.0 against 8.06 B per entry measured at 4096, multi-head).
    The fit holds where the (n × m) block sets the peak: from n = 128 for every naive reference here
    (causal `linear`'s peak is an O(n·d) tensor's below that), so lengths under CALIBRATION_N fit less well.
    """

    per_entry: float
    per_position: float
    at: tuple[int, ...]

    def bytes(self, case: Case, batch: int, n: int) -> float:
        return self.per_entry * naive_entries(case, batch, n) + self.per_position * batch * n

    def method(self) -> str:
        lengths = " and ".join(f"n={n}" for n in self.at)
        return (f"estimate ({self.per_entry:.2f} B per score entry + {self.per_position:.0f} B per position, "
                f"fitted at {lengths})")


def calibrate_naive(cases: list[Case], batch: int, cfg: PerfConfig) -> dict[str, NaiveMemory]:
    """Each case's `NaiveMemory`, from its naive reference's peaks at n = min(CALIBRATION_N, the
    shortest length) and half of it (the rate per entry alone where that is under 2)."""
    peaks: dict[str, list[tuple[int, float]]] = {}
    case_of = {case.label: case for case in cases}
    small = replace(cfg, naive_limit_gib=math.inf)
    top = min(CALIBRATION_N, *cfg.lengths)
    for n in sorted({max(1, top // 2), top}):
        for cand in build_candidates(cases, batch, n, small, {}):
            if cand.impl == NAIVE:
                peak, _ = peak_memory(cand.fn, device=cfg.device)
                peaks.setdefault(cand.case.label, []).append((n, peak))
    estimates = {label: _fit(case_of[label], batch, points) for label, points in peaks.items()}
    for case in cases:  # a `same_as` case runs its twin's naive reference: its estimate, for lengths
        if case.same_as in estimates and case.label not in estimates:  # where (PerfConfig.cells) it runs alone
            estimates[case.label] = estimates[case.same_as]
    return estimates


def _fit(case: Case, batch: int, points: list[tuple[int, float]]) -> NaiveMemory:
    """peak = a·entries + b·batch·n through the two (n, peak) points; a rate per entry alone (b = 0)
    from the longer one where there is one point, the points are below CALIBRATION_N / 2 (where
    the block need not set the peak: at 32 and 64 the fit put causal `linear` at 0.25 B per entry,
    a twentieth of its peak at 512; the rate alone errs high, which keeps --naive-limit-gib safe),
    or the fit is not positive."""
    (n2, p2), e2 = points[-1], naive_entries(case, batch, points[-1][0])
    if len(points) == 2 and points[0][0] >= CALIBRATION_N // 2:  # shorter: an O(n·d) tensor may set the peak
        (n1, p1), e1 = points[0], naive_entries(case, batch, points[0][0])
        det = e1 * batch * n2 - e2 * batch * n1
        if det:
            a = (p1 * batch * n2 - p2 * batch * n1) / det
            b = (e1 * p2 - e2 * p1) / det
            if a > 0 and b > -1:  # b within a byte of 0: rounding, not a negative size
                return NaiveMemory(a, max(b, 0.0) + 0.0, (n1, n2))  # + 0.0: never -0
    return NaiveMemory(p2 / e2, 0.0, (n2,))


# ------------------------------------------------------------------------------- running
def _predict(history: dict, key: tuple, n: int, exponent: int) -> float | None:
    """Seconds per call at n, extrapolated from the last measured length of the same series."""
    if key not in history:
        return None
    last_n, last_s = history[key]
    return last_s * (n / last_n) ** exponent


def verify(cand: Candidate, cfg: PerfConfig) -> float:
    """One call under the memory counter; compare with the reference; returns the call's seconds.

    A compiled kernel is called once first, so compiling is neither clocked nor counted. Where the
    counter saw its eager form (CPU), `peak_memory` counted the compiled call's allocations in a
    second call; it is called once more to be clocked alone: that output is the one checked, that
    call's seconds the ones returned. An SDPA core's counted call is also profiled, to record which
    SDPA kernel it ran (`sdpa_kernel`).
    """
    box = {}

    def call():
        box["out"] = cand.fn()

    if cand.compiled:
        with without_graphs():  # a CUDA graph captured here would be dropped just below
            call()  # compiles on first use: outside the memory counter and the clock
    # what kernels keep between calls (a CUDA graph, a block mask, a band bias: variants/caches.py)
    # is built again in the counted call, whose peak then counts it, whichever candidate came first
    forget_caches()
    count = lambda: peak_memory(call, device=cfg.device)  # noqa: E731
    start = time.perf_counter()
    if cand.calls_sdpa:  # which SDPA kernel: the same call, profiled
        kernels, (peak, method) = sdpa_kernels(count)
        cand.row["sdpa_kernel"] = ", ".join(kernels) or "none"
    else:
        peak, method = count()
    seconds = time.perf_counter() - start
    cand.row.update(peak_bytes=peak, mem_method=method)
    if method in (CPU_ALLOCATOR_METHOD, CPU_EAGER_PATH_METHOD):  # check and clock the compiled call alone
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    tol = TOLERANCE[cfg.resolved_dtype()]
    err = cand.check(box.pop("out"))
    cand.row.update(rel_err=err, tolerance=tol, verified=err <= tol)
    cand.status = "verified" if err <= tol else f"mismatch: rel err {err:.2e} > {tol:g}"
    return seconds


def run_suite(cfg: PerfConfig, *, extra: Callable[[list[Candidate], int, int], list[Candidate]] | None = None,
              log: Callable[[str], None] = print, save: Callable[[list[dict]], None] | None = None,
              at_rev: tuple[str, dict[str, type]] | None = None) -> list[dict]:
    """Run the benchmark; `extra(candidates, batch, n)` may add candidates (tests inject a wrong one).

    `save(rows)` is called with the rows so far after each length, so a killed run keeps them.
    `at_rev`: `revision_classes(cfg.against, …)` already loaded by the caller (else loaded here).
    """
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_suite(cfg, extra, log, save or (lambda rows: None), at_rev)
    finally:
        torch.set_num_threads(threads_before)


def _run_suite(cfg: PerfConfig, extra, log, save, at_rev) -> list[dict]:
    cases = select_cases(list(cfg.variants), cfg.cases)
    dtype = cfg.resolved_dtype()
    if cfg.against and at_rev is None:
        at_rev = revision_classes(cfg.against, sorted({c.variant for c in cases if c.variant}), log)
    heap = set_heap(cfg.device, cfg.heap, log)  # before the matmul peak and every timing: one condition for all
    peak_flops = matmul_peak(device=cfg.device, dtype=dtype)
    machine = machine_name(cfg.device)
    common = {
        "d_head": None, "dtype": str(dtype).replace("torch.", ""), "device": cfg.device,
        "matmul_peak_flops": peak_flops, "machine": machine, "threads": torch.get_num_threads(),
        "heap": heap, "torch": torch.__version__, "git_sha": git_sha(),
    }
    log(f"matmul peak {peak_flops / 1e9:.1f} GFLOP/s on {machine}, {threads_text(torch.get_num_threads())}, "
        f"{common['dtype']}, heap {heap}")
    rows: list[dict] = []
    for batch in cfg.batches:
        lengths = [n for n in cfg.lengths if batch == 1 or n <= cfg.batched_max_n]
        with torch.inference_mode():
            naive_memory = calibrate_naive(cases, batch, cfg)
        history: dict = {}  # (case, impl) → (n, seconds per call)
        dropped: dict = {}  # (case, impl) → why longer lengths are not run
        for n in lengths:
            at_n = cases_at(cases, cfg.cells, n)
            if not at_n:
                continue
            with torch.inference_mode():
                cands = build_candidates(at_n, batch, n, cfg, naive_memory, at_rev)
                if extra is not None:
                    cands = extra(cands, batch, n)
                timed = _verify_all(cands, cfg, history, dropped, batch, n, log, peak_flops)
                local_peak = _time_all(timed, cfg) or peak_flops
                for cand in cands:
                    rows.append(_row(cand, batch, n, {**common, "matmul_peak_flops": local_peak}, local_peak, history))
                    log(_line(rows[-1]))
            save(rows)
    _memory_probes(cases, cfg, rows, common, peak_flops, log)
    add_ratios(rows)
    save(rows)
    return rows


def _figure(value: float, decimals: int) -> str:
    """`value` with `decimals` decimals, or as many more as show its first two digits: a limit of
    0.08 s is not "0 s" (90 → '90', 0.0123 → '0.012')."""
    if value > 0 and math.isfinite(value):
        decimals = max(decimals, 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def _memory_probes(cases: list[Case], cfg: PerfConfig, rows: list[dict], common: dict, peak_flops: float, log) -> None:
    """Run each memory probe's core once (verified, not timed) and put its row in place of the skipped one.

    Last, because on CPU glibc's mmap threshold is pinned at 4 MiB first, whatever the timings ran
    under (big blocks go back to the OS when freed): without that, glibc's heap fragmented under
    additive at n = 4096 until a 24 GiB machine ran out of memory, and pinning it earlier would make
    every block over 4 MiB page-fault in each timed call. The peak is counted from live tensors, so
    it does not depend on the heap.
    """
    # probe only what the run skipped: not a cell already measured (timed, or verified with its
    # memory), nor one whose series ran out of memory at a shorter length
    done = {(r["case"], r["n"]) for r in rows if r["impl"] == CORE and r["batch"] == 1
            and (r["median_s"] is not None or r["verified"] or str(r["status"]).startswith(("oom", "error")))}
    probes = [(c, n) for c in cases for label, n in cfg.memory_probes
              if c.label == label and n in cfg.lengths and 1 in cfg.batches and (label, n) not in done
              and (cfg.cells is None or (label, n) in cfg.cells)]
    for case, n in probes:
        if torch.device(cfg.device).type == "cpu":
            glibc_heap.pin_mmap_threshold(STEADY_BYTES)  # not steady_heap(): it pins once per process only
        with torch.inference_mode():
            cand = next(c for c in build_candidates([case], 1, n, cfg, {}) if c.impl == CORE)
            try:
                seconds = verify(cand, cfg)
                if cand.row["verified"]:
                    cand.status = f"not timed: memory probe, one call took {_figure(seconds, 0)} s"
            except Exception as exc:
                cand.status = f"oom: {exc}" if is_oom(exc) else f"error: {type(exc).__name__}: {exc}"
                cand.status = cand.status.splitlines()[0][:160]
        row = _row(cand, 1, n, common, peak_flops, {})
        at = next((i for i, r in enumerate(rows) if (r["case"], r["impl"], r["batch"], r["n"]) == (case.label, CORE, 1, n)), None)
        if at is None:
            rows.append(row)
        else:
            rows[at] = row
        log(_line(row))


def _exponent(cand: Candidate) -> int:
    return 2 if cand.impl in (NAIVE, SDPA) or cand.case.complexity == "n^2" else 1


def _first_estimate(cand: Candidate, batch: int, n: int, peak_flops: float) -> float | None:
    """Seconds per call of a quadratic candidate with no shorter length timed: its two (n × n × d)
    products at the matmul peak, a floor (nothing runs faster than the peak). None for the others."""
    if _exponent(cand) != 2 or not peak_flops:
        return None
    return 4 * batch * n * n * D_MODEL / peak_flops


def _verify_all(cands, cfg, history, dropped, batch, n, log, peak_flops=None) -> list[Candidate]:
    timed = []
    for cand in cands:
        key = (cand.case.label, cand.impl)
        if cand.fn is None:
            continue
        if cand.case.max_tokens and batch * n > cand.case.max_tokens:
            probe = cand.impl == CORE and (cand.case.label, n) in cfg.memory_probes and batch == 1
            cand.fn = None
            cand.status = f"skipped: timed up to batch × n = {cand.case.max_tokens}" + (
                "; memory probed at the end" if probe else "")
            continue
        if key in dropped:
            cand.fn, cand.status = None, dropped[key]
            continue
        predicted = _predict(history, key, n, _exponent(cand))
        if predicted is not None and predicted > cfg.max_cell_s:
            cand.fn = None
            cand.status = dropped[key] = f"skipped: predicted {_figure(predicted, 0)} s per call (> --max-cell-s {cfg.max_cell_s:g})"
            continue
        floor = _first_estimate(cand, batch, n, peak_flops) if predicted is None else None
        if floor is not None and floor > cfg.max_cell_s:  # a call the kernel could not stop short of hours
            cand.fn = None
            cand.status = dropped[key] = (f"skipped: its FLOPs at the matmul peak take {_figure(floor, 0)} s per call at the "
                                          f"least (> --max-cell-s {cfg.max_cell_s:g})")
            continue
        try:
            seconds = verify(cand, cfg)
        except Exception as exc:  # one broken implementation never ends the run
            if is_oom(exc):
                cand.status = dropped[key] = f"oom: {str(exc).splitlines()[0][:120]}"
            else:
                cand.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            cand.fn = None
            continue
        history[key] = (n, seconds)
        if not cand.row["verified"]:
            log(f"  {cand.case.label} {cand.impl} n={n}: {cand.status} — not timed")
            continue
        if seconds * (1 + cfg.repeat) > cfg.max_cell_s:
            cand.status = f"not timed: one call took {_figure(seconds, 1)} s; memory and output verified"
            dropped[key] = f"skipped: one call took {_figure(seconds, 1)} s at a shorter length"
            continue
        timed.append(cand)
    return timed


def _time_all(timed: list[Candidate], cfg: PerfConfig) -> float | None:
    """Time the verified candidates, `repeat` interleaved rounds; returns the matmul peak (FLOP/s)
    timed in the same rounds, so FLOP/s fractions are taken against the machine's speed of the
    moment (None when nothing was timed)."""
    if not timed:
        return None
    size = MATMUL_SIZE["cuda" if torch.device(cfg.device).type == "cuda" else "cpu"]
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(cfg.device, cfg.resolved_dtype()) for _ in range(2))
    peak = []
    if torch.device(cfg.device).type == "cuda":  # verify() of each later candidate dropped this one's
        for cand in timed:  # caches (a CUDA graph's capture takes a sync and two calls): built again, untimed
            cand.fn()
    for r in range(cfg.repeat):
        order = timed if r % 2 == 0 else timed[::-1]  # alternate the order against drift
        for cand in order:
            timing = time_call(cand.fn, device=cfg.device, min_run_time=cfg.min_run_time, warmup=0)  # warmed above
            cand.times.append(timing)
        peak.append(time_call(lambda: a @ b, device=cfg.device, min_run_time=cfg.min_run_time, warmup=1).median_s)
    for cand in timed:
        cand.status = "ok"
    return 2 * size**3 / statistics.median(peak)


IQR_MIN_RUNS = 4  # measurements (blocks) a repeat needs before its interquartile range says anything


def _iqr(times: list) -> float | None:
    """The median over repeats of `blocked_autorange`'s IQR, from the repeats of IQR_MIN_RUNS
    measurements or more; None where none has them (a call longer than --min-run-time is measured
    once: its IQR of 0 would read as perfect precision)."""
    spread = [t.iqr_s for t in times if t.runs >= IQR_MIN_RUNS]
    return statistics.median(spread) if spread else None


def _row(cand: Candidate, batch: int, n: int, common: dict, peak_flops: float, history: dict) -> dict:
    case = cand.case
    row = dict.fromkeys(ROW_COLUMNS)
    row.update(common)
    row.update(
        case=case.label, impl=cand.impl if cand.impl != PEER else f"peer:{case.peer}",
        variant=case.variant or "sdpa", options=",".join(f"{k}={v}" for k, v in case.options),
        causal=case.causal, batch=batch, heads=case.heads, d_head=D_MODEL // case.heads, n=n,
        status=cand.status, verified=False, peer_version=cand.peer_version,
    )
    row.update(cand.row)
    if cand.times:
        medians = [t.median_s for t in cand.times]
        row.update(
            median_s=statistics.median(medians), iqr_s=_iqr(cand.times),
            min_s=min(medians), max_s=max(medians), repeats=len(medians), runs=sum(t.runs for t in cand.times),
            round_medians_s=ROUND_SEPARATOR.join(repr(m) for m in medians),  # exact: ranges match median_s
        )
        history[(case.label, cand.impl)] = (n, row["median_s"])
        if cand.meta_fn is not None:
            try:
                row["flops"] = count_flops(cand.meta_fn)
            except Exception:  # an op without a meta kernel: count on the real inputs
                row["flops"] = count_flops(cand.fn)
            if case.causal and cand.calls_sdpa:
                row["flops"] = causal_sdpa_flops(row["flops"], n)
            row["flops_per_s"] = row["flops"] / row["median_s"]
            row["peak_fraction"] = row["flops_per_s"] / peak_flops
            rated = rated_peak(str(row["machine"]), str(row["dtype"])) if row["device"] != "cpu" else None
            if rated:  # CUDA: also of the GPU's data-sheet dense peak (benchmarks/rated_peaks.py)
                row["rated_peak_fraction"] = row["flops_per_s"] / rated
    return row


def causal_sdpa_flops(counted: int, n: int) -> int:
    """A causal SDPA call's FLOPs from the count of its full (n × n) form: the n(n+1)/2 scores
    on or below the diagonal, the work causal attention needs, as FlashAttention's papers count
    it. torch's FLOP counter takes every entry (its SDPA formulas ignore `is_causal`), which put
    causal SDPA at 106 % of the matmul peak on CPU and 122 % on an H200. A kernel may multiply
    more than this: torch's CPU flash kernel skips only whole key blocks of 512 above the
    diagonal, so it computes every entry at n = 512 (its time there equals the full form's) and
    0.625 of them at 2048; its FLOP/s then reads low, not high. A naive reference computes the
    full matrix and keeps its count."""
    return counted * (n + 1) // (2 * n)


LABEL_WIDTH = max(len(c.label) for c in CASES)


def _line(row: dict) -> str:
    t = row["median_s"]
    spread = f"± {row['iqr_s'] * 1e3:.2f}" if row["iqr_s"] is not None else "± n/a"
    timing = f"{t * 1e3:9.2f} ms {spread}" if t is not None else " " * 9 + "-"
    return f"b={row['batch']} n={row['n']:>5} {row['case']:<{LABEL_WIDTH}} {row['impl']:<34} {timing}  {row['status']}"


def round_ratios(row: dict, base: dict) -> list[float]:
    """row's time ÷ base's in each interleaved round both were timed in (`round_medians_s`: the
    rounds of one length time every implementation once each), so the machine's drift between
    rounds cancels in each; [] where either lacks them (a CSV from before they were kept) or
    their rounds differ in number."""
    mine, theirs = (_rounds(r.get("round_medians_s")) for r in (row, base))
    if not mine or len(mine) != len(theirs):
        return []
    return [a / b for a, b in zip(mine, theirs) if a > 0 and b > 0]  # NaN compares False: dropped


def _rounds(value) -> list[float]:
    """The per-round medians of a `round_medians_s` cell: a string, or a number where a CSV of one
    round was read back (pandas parses it as one); NaN or None: none."""
    if isinstance(value, str):
        return [float(x) for x in value.split(ROUND_SEPARATOR) if x]
    if value is None or math.isnan(float(value)):
        return []
    return [float(value)]


def round_range(row: dict, base: dict) -> tuple[float | None, float | None]:
    """The lowest and highest of `round_ratios` where there were several rounds, else (None, None)."""
    per_round = round_ratios(row, base)
    return (min(per_round), max(per_round)) if len(per_round) > 1 else (None, None)


def _ratio_columns(row: dict, name: str, base: dict) -> None:
    """`name` = row's median ÷ base's median, with `name`_min / _max its `round_range`."""
    row[name] = row["median_s"] / base["median_s"]
    row[f"{name}_min"], row[f"{name}_max"] = round_range(row, base)


def range_text(lo: float | None, hi: float | None) -> str:
    """A ratio's lowest and highest over the rounds as " [lo–hi]", or "" where it has none."""
    return "" if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) else f" [{lo:.2f}–{hi:.2f}]"


def add_ratios(rows: list[dict]) -> None:
    """ratio_vs_sdpa, ratio_vs_peer (each with its lowest and highest over the rounds) and the
    scaling ratio t(n_max)/t(n_max/8), in place."""
    by_key = {(r["case"], r["impl"], r["batch"], r["n"]): r for r in rows}
    cases = {c.label: c for c in select_cases(None)}
    for r in rows:
        t = r["median_s"]
        if t is None:
            continue
        case = cases.get(r["case"])
        base = by_key.get((case.baseline if case else "sdpa", "sdpa", r["batch"], r["n"]))
        if base and base["median_s"]:
            _ratio_columns(r, "ratio_vs_sdpa", base)
        if r["impl"] == CORE and case and case.peer:
            peer = by_key.get((r["case"], f"peer:{case.peer}", r["batch"], r["n"])) or by_key.get(
                (case.same_as, f"peer:{case.peer}", r["batch"], r["n"]))
            if peer and peer["median_s"]:
                _ratio_columns(r, "ratio_vs_peer", peer)
    series: dict = {}
    for r in rows:
        if r["median_s"] is not None:
            series.setdefault((r["case"], r["impl"], r["batch"]), {})[r["n"]] = r["median_s"]
    for r in rows:
        times = series.get((r["case"], r["impl"], r["batch"]), {})
        all_n = sorted({x["n"] for x in rows if x["batch"] == r["batch"]})
        top = all_n[-1] if all_n else None
        if top and top // 8 in times and top in times:
            r["scaling_ratio"] = times[top] / times[top // 8]
            r["scaling_span"] = f"{top}/{top // 8}"


def default_threads() -> int:
    """The thread count the benchmark pins: every core torch sees."""
    return torch.get_num_threads() or os.cpu_count() or 1
