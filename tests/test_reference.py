"""Fast paths against independent references: outputs and gradients, fp32, relative error ≤ 1e-5.

Shapes include lengths that are not multiples of the window or chunk size.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attnbench import build_variant
from attnbench.runner.measure import peak_memory
from attnbench.variants import additive as additive_module
from attnbench.variants.additive import CHUNK_ELEMENTS
from attnbench.variants.compiled import eager_fallbacks
from attnbench.variants.linear import (
    CAUSAL_SEGMENT, CAUSAL_STEP_ELEMENTS, CHUNK, CPU_CHUNK, CUDA_CHUNKS_PER_STEP, CUDA_STATES_PER_STEP, EPS,
    FUSED_CAUSAL_SEGMENT, FUSED_CAUSAL_STEP_ELEMENTS, FUSED_GLOBAL_SEGMENT_ELEMENTS, GLOBAL_SEGMENT_ELEMENTS,
    GRAD_CAUSAL_SEGMENT, MIN_GLOBAL_SEGMENT, _feature_values, _features, _pair_groups, causal_linear_attention,
    default_causal_chunk, default_causal_pairs, default_causal_segment, default_global_segment,
    global_linear_attention,
)
from attnbench.variants import linear as linear_module
from attnbench.variants import local as local_module
from attnbench.variants.local import sliding_window_attention
from attnbench.variants.reference import (
    additive_attention,
    feature_map,
    full_attention,
    linear_attention,
    linear_attention_recurrent,
)

TOL = 1e-5


def rel_err(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-12) -> float:
    """The largest error relative to the reference's largest entry (or to `floor`, if larger)."""
    return ((got - want).abs().max() / want.abs().max().clamp_min(floor)).item()


def qkv(b, h, n, d, seed=0, m=None):
    gen = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    make = lambda length: torch.randn(b, h, length, d, generator=gen).requires_grad_()  # noqa: E731
    return make(n), make(m), make(m)


def padding(b, m, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, m + 1, (b,), generator=gen)
    lengths[0] = m
    return torch.arange(m)[None, :] >= lengths[:, None]


def assert_same(fast_fn, ref_fn, tensors, grad_floor: float = 1e-12):
    """Same outputs and the same gradients for every input tensor (gradient errors relative to the
    reference gradient's largest entry, or to `grad_floor` where that is larger)."""
    fast, ref = fast_fn(*tensors), ref_fn(*tensors)
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(99))
    fast_grads = torch.autograd.grad((fast * probe).sum(), tensors)
    ref_grads = torch.autograd.grad((ref * probe).sum(), tensors)
    assert rel_err(fast, ref) <= TOL, f"outputs differ: {rel_err(fast, ref):.2e}"
    for i, (g, r) in enumerate(zip(fast_grads, ref_grads)):
        err = rel_err(g, r, floor=grad_floor)
        assert err <= TOL, f"gradient {i} differs: {err:.2e}"


# ------------------------------------------------------------------------------ multi-head
def mha_with_weights_of(layer) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(layer.d_model, layer.heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
        mha.out_proj.weight.copy_(layer.out_proj.weight)
        mha.out_proj.bias.copy_(layer.out_proj.bias)
    return mha


SELF_MODES = ["plain", "causal", "padding", "causal+padding"]
CROSS_MODES = ["plain", "padding"]  # causal masking is defined for self-attention only


@pytest.mark.parametrize(
    ("b", "n", "m", "heads", "mode"),
    [(2, 7, 7, 4, mode) for mode in SELF_MODES]
    + [(3, 33, 33, 2, mode) for mode in SELF_MODES]
    + [(1, 65, 17, 8, mode) for mode in CROSS_MODES]
    + [(2, 10, 129, 1, mode) for mode in CROSS_MODES],
)
def test_multi_head_equals_torch_multihead_attention(b, n, m, heads, mode):
    torch.manual_seed(n)
    layer = build_variant("multi-head", d_model=64, n_heads=heads)
    mha = mha_with_weights_of(layer)
    causal, cross = "causal" in mode, m != n
    x = torch.randn(b, n, 64, requires_grad=True)
    context = torch.randn(b, m, 64, requires_grad=True) if cross else None
    mask = padding(b, m, seed=n) if "padding" in mode else None
    source = context if cross else x
    attn_mask = torch.ones(n, m, dtype=torch.bool).triu(1) if causal else None

    ours, our_weights = layer(x, context, key_padding_mask=mask, causal=causal, need_weights=True)
    fused, _ = layer(x, context, key_padding_mask=mask, causal=causal)
    theirs, their_weights = mha(x, source, source, key_padding_mask=mask, attn_mask=attn_mask,
                                need_weights=True, average_attn_weights=False)
    assert rel_err(ours, theirs) <= TOL and rel_err(fused, theirs) <= TOL
    assert rel_err(our_weights, their_weights) <= TOL

    inputs = [x] + ([context] if cross else [])
    probe = torch.randn(b, n, 64)
    ours_g = torch.autograd.grad((fused * probe).sum(), inputs + [layer.q_proj.weight, layer.v_proj.weight])
    theirs_g = torch.autograd.grad((theirs * probe).sum(), inputs + [mha.in_proj_weight])
    for got, want in zip(ours_g[: len(inputs)], theirs_g[: len(inputs)]):
        assert rel_err(got, want) <= TOL
    d = 64
    assert rel_err(ours_g[-2], theirs_g[-1][:d]) <= TOL  # q block of in_proj
    assert rel_err(ours_g[-1], theirs_g[-1][2 * d :]) <= TOL  # v block of in_proj


# ------------------------------------------------------------------------------ dot-product
@pytest.mark.parametrize(("b", "n", "causal"), [(2, 5, False), (1, 37, True), (3, 64, False)])
def test_dot_product_equals_naive_softmax(b, n, causal):
    torch.manual_seed(b + n)
    layer = build_variant("dot-product", d_model=48, n_heads=4)  # n_heads is ignored: one head
    assert layer.heads == 1
    x = torch.randn(b, n, 48, requires_grad=True)

    def naive(x):
        q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(48)
        if causal:
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        return layer.out_proj(scores.softmax(-1) @ v)

    assert_same(lambda x: layer(x, causal=causal)[0], naive, [x])


# ------------------------------------------------------------------------------ local
@pytest.mark.parametrize(("n", "window"), [(5, 5), (13, 64), (100, 100), (128, 128), (129, 130), (31, 1000)])
@pytest.mark.parametrize("causal", [False, True])
def test_local_with_window_at_least_n_equals_full_attention(n, window, causal):
    q, k, v = qkv(2, 3, n, 16, seed=n)
    mask = padding(2, n, seed=window)
    assert_same(
        lambda q, k, v: sliding_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=mask),
        lambda q, k, v: full_attention(q, k, v, causal=causal, key_padding_mask=mask)[0],
        [q, k, v],
    )


@pytest.mark.parametrize(("n", "window"), [(10, 1), (10, 3), (37, 4), (64, 16), (100, 7), (257, 32), (300, 3)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("path", ["blocks", "banded dense"])
def test_local_equals_masked_naive_reference(n, window, causal, padded, path, monkeypatch):
    # either path forced (every case here has n > 2·window): the blocks (of MIN_BLOCK = 16 queries
    # where the window is smaller), or one (n × n) band mask
    monkeypatch.setattr(local_module, "DENSE_MAX_N", 0 if path == "blocks" else 1 << 20)
    dense_calls = []
    banded_dense = local_module._banded_dense
    monkeypatch.setattr(local_module, "_banded_dense", lambda *a, **kw: dense_calls.append(1) or banded_dense(*a, **kw))
    assert_local_equals_reference(n, window, causal, padded)
    assert len(dense_calls) == (path == "banded dense")


@pytest.mark.parametrize(
    ("n", "window", "padded", "dense"),
    [(128, 16, False, True), (129, 16, False, False), (256, 128, False, True), (257, 128, False, False),
     (300, 256, False, False),  # past 256 always the blocks, whatever the window
     (128, 4, True, True), (256, 128, True, False)],  # padded: a mask per (b h) entry, 2·4·256² > 1 << 18
)
def test_local_takes_the_banded_dense_path_for_short_sequences_only(n, window, padded, dense, monkeypatch):
    monkeypatch.setattr(local_module, "GROUP_ELEMENTS", 1 << 18)
    calls, dense_result = [], object()
    monkeypatch.setattr(local_module, "_banded_dense", lambda *a, **kw: calls.append(1) or dense_result)
    q, k, v = (torch.zeros(2, 4, n, 4) for _ in range(3))
    mask = padding(2, n) if padded else None
    out = sliding_window_attention(q, k, v, window=window, key_padding_mask=mask)
    assert (calls == [1]) == dense and (out is dense_result) == dense


def assert_local_equals_reference(n, window, causal, padded):
    q, k, v = qkv(2, 2, n, 8, seed=window)
    mask = padding(2, n, seed=n) if padded else None
    assert_same(
        lambda q, k, v: sliding_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=mask),
        lambda q, k, v: full_attention(q, k, v, causal=causal, window=window, key_padding_mask=mask)[0],
        [q, k, v],
        # window 1: softmax over one key does not depend on q or k, whose gradients are exactly zero
        # in the reference and rounding noise (~1e-8) in SDPA's fused backward: judged against 1,
        # the inputs' scale
        grad_floor=1.0 if window == 1 else 1e-12,
    )


@pytest.mark.parametrize(("n", "window"), [(300, 129), (700, 200)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
# 1 << 15: one block per group; 1 << 19: padded, two blocks per group at window 129 (3 blocks: 2
# groups), unpadded one group (the mask is shared by every (b h) entry)
@pytest.mark.parametrize("group_elements", [1 << 15, 1 << 19])
def test_local_with_blocks_smaller_than_the_window_and_many_groups(n, window, causal, padded, group_elements, monkeypatch):
    # window > BLOCK: query blocks shorter than the window; a small group size: several groups
    monkeypatch.setattr(local_module, "GROUP_ELEMENTS", group_elements)
    assert local_module.BLOCK < window
    assert_local_equals_reference(n, window, causal, padded)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_local_bounds_each_sdpa_call_s_band_mask_and_scores(padded, training, monkeypatch):
    # the band mask is built a group at a time (a key padding mask makes one per (b h) entry), and
    # a group's score entries (b·h·blocks·size·span) are bounded, tighter where its backward will
    # hold their span-shaped gradients. Blocks of 20 queries, spans of 58 keys, b·h = 4: the mask
    # bounds 14 blocks a call (3 with key padding), the scores 14, in training 7
    monkeypatch.setattr(local_module, "GROUP_ELEMENTS", 1 << 14)
    monkeypatch.setattr(local_module, "GROUP_SCORES", 1 << 16)
    monkeypatch.setattr(local_module, "TRAINING_GROUP_SCORES", 1 << 15)
    sdpa, calls = F.scaled_dot_product_attention, []

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((attn_mask.numel(), q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    if training:
        assert_local_equals_reference(1000, 20, False, padded)  # 50 blocks
    else:
        q, k, v = qkv(2, 2, 1000, 8)
        with torch.no_grad():
            sliding_window_attention(q, k, v, window=20, key_padding_mask=padding(2, 1000) if padded else None)
    assert len(calls) == (17 if padded else 8 if training else 4)
    scores = 1 << 15 if training else 1 << 16
    assert all(mask <= 1 << 14 and entries <= scores for mask, entries in calls), calls


def test_local_builds_its_band_mask_a_group_at_a_time(monkeypatch):
    # with key padding the mask has one copy per (b h) entry: built for the whole sequence at once
    # it held 8.4× q's bytes here, a group at a time 2.1× (the output, and its groups' parts)
    monkeypatch.setattr(local_module, "GROUP_ELEMENTS", 1 << 14)
    q, k, v = (torch.randn(2, 2, 4000, 8) for _ in range(3))
    mask = torch.arange(4000)[None] >= torch.tensor([4000, 1500])[:, None]
    with torch.no_grad():
        peak, _ = peak_memory(lambda: sliding_window_attention(q, k, v, window=20, key_padding_mask=mask), device="cpu")
    assert peak <= 3 * q.nbytes


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # SDPA has no batching rule: a loop
def test_local_through_torch_func_transforms_matches_the_reference():
    q, k, v = (t.detach().double() for t in qkv(2, 2, 300, 8, seed=4))  # a batch of (1 2 300 8) inputs
    grads = [
        torch.func.vmap(torch.func.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))(q, k, v)
        for fn in (
            lambda q, k, v: sliding_window_attention(q[None], k[None], v[None], window=5),
            lambda q, k, v: full_attention(q[None], k[None], v[None], window=5)[0],
        )
    ]
    for fast, ref in zip(*grads):
        torch.testing.assert_close(fast, ref)


def test_local_on_an_empty_batch_gives_an_empty_output():
    x = torch.zeros(0, 300, 32, requires_grad=True)
    out, _ = build_variant("local", d_model=32, n_heads=2, window=5)(x, key_padding_mask=torch.zeros(0, 300, dtype=torch.bool))
    out.sum().backward()
    assert out.shape == (0, 300, 32) and x.grad.shape == x.shape


def test_local_window_reaches_exactly_window_minus_one_back():
    q, k, v = qkv(1, 1, 40, 4, seed=3)
    out = sliding_window_attention(q, k, v, window=5, causal=True).detach()
    v2 = v.detach().clone()
    v2[:, :, 10] += 100.0  # visible from queries 10..14 only
    out2 = sliding_window_attention(q, k, v2, window=5, causal=True).detach()
    changed = (out2 - out).abs().amax(dim=-1)[0, 0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [10, 11, 12, 13, 14]


# ------------------------------------------------------------------------------ linear
# (n, chunk, segment); the segment is rounded down to whole chunks (at least one): 512 is one
# segment for every n here; 20 → (100, 4) has 5 segments of 5 chunks; 3 → one chunk per segment
CAUSAL_LINEAR_CASES = [
    (n, chunk, segment)
    for segment in (512, 20, 3)
    for n, chunk in [(2, 4), (9, 4), (64, 64), (100, 16), (100, 4), (130, 64), (77, 200)]
] + [
    # a carried state, a last segment of several chunks and chunk padding at once: 45 = 20 + 20 + 5,
    # the last segment 2 chunks of 4 padded to 8; 150 = 64 + 64 + 22, 2 chunks of 16 padded to 32
    (45, 4, 20),
    (150, 16, 64),
    (131, 16, 64),  # 64 + 64 + 3: a last segment of one padded chunk
]


@pytest.mark.parametrize(
    ("n", "chunk", "segment"),
    CAUSAL_LINEAR_CASES,
    ids=[f"n{n}-chunk{chunk}-segment{segment}" for n, chunk, segment in CAUSAL_LINEAR_CASES],
)
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_chunked_causal_linear_equals_recurrent_form(n, chunk, padded, segment):
    q, k, v = qkv(2, 2, n, 8, seed=n + chunk)
    mask = padding(2, n, seed=chunk) if padded else None
    assert_same(
        lambda q, k, v: causal_linear_attention(
            q, k, v, chunk_size=chunk, key_padding_mask=mask, segment=segment
        ),
        lambda q, k, v: linear_attention_recurrent(q, k, v, key_padding_mask=mask),
        [q, k, v],
    )


def test_the_causal_scan_takes_whole_chunk_counts_a_step_on_cuda_and_cpu_s_tuned_segments_elsewhere():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [default_causal_segment(cuda, fused, 64, 8) for fused in (False, True)] == [16384, 16384]
    assert default_causal_segment(cuda, False, 1, 8) == CUDA_CHUNKS_PER_STEP  # chunks, not positions, bound it
    # and the chunk states over the batch and heads: b = 32, h = 8 takes 8 chunks; b·h past the budget, 1
    assert default_causal_segment(cuda, False, 64, 256) == 8 * 64 and CUDA_STATES_PER_STEP // 256 == 8
    assert default_causal_segment(cuda, False, 64, 4 * CUDA_STATES_PER_STEP) == 64
    assert [default_causal_segment(cpu, fused, 32, 8) for fused in (False, True)] == [CAUSAL_SEGMENT, FUSED_CAUSAL_SEGMENT]
    assert [default_causal_segment(cpu, fused, 64, 8, grad=True) for fused in (False, True)] == [GRAD_CAUSAL_SEGMENT] * 2
    assert default_causal_segment(cuda, False, 64, 8, grad=True) == 16384  # CUDA's whatever the gradient
    # CUDA's step at chunk 1 (256 positions): 300 = 256 + 44, the second step carrying the first's state
    q, k, v = qkv(1, 2, 300, 8, seed=3)
    mask = padding(1, 300, seed=4)
    assert_same(
        lambda q, k, v: causal_linear_attention(
            q, k, v, chunk_size=1, key_padding_mask=mask, segment=default_causal_segment(cuda, False, 1, 2)
        ),
        lambda q, k, v: linear_attention_recurrent(q, k, v, key_padding_mask=mask),
        [q, k, v],
    )


# (b, h, pairs): 5 pairs a group at h = 2 take one batch element of the 3 at a time (groups of one
# shape: 2 elements would leave a last group of 1); 4 at h = 4 take two of 4; 3 at h = 6 take
# heads 0-2, then 3-5, of each element; 1 takes each pair alone
PAIR_GROUP_CASES = [(3, 2, 5), (4, 4, 8), (2, 6, 3), (2, 4, 1)]


@pytest.mark.parametrize(
    ("b", "h", "pairs"), PAIR_GROUP_CASES, ids=[f"b{b}-h{h}-pairs{pairs}" for b, h, pairs in PAIR_GROUP_CASES]
)
def test_the_causal_scan_over_groups_of_pairs_equals_the_recurrent_form(b, h, pairs):
    q, k, v = qkv(b, h, 45, 8, seed=b * h + pairs)
    mask = padding(b, 45, seed=pairs)  # each element its own length: a group must take its own rows
    assert_same(
        lambda q, k, v: causal_linear_attention(
            q, k, v, chunk_size=4, key_padding_mask=mask, segment=20, pairs=pairs
        ),
        lambda q, k, v: linear_attention_recurrent(q, k, v, key_padding_mask=mask),
        [q, k, v],
    )


def test_the_pair_groups_share_one_shape_and_cover_every_pair_once():
    for b, h, pairs in [(3, 8, 23), (6, 2, 5), (1, 12, 8), (1, 7, 4), (5, 3, 15), (4, 8, 1000)]:
        groups = _pair_groups(b, h, pairs)
        covered = torch.zeros(b, h, dtype=torch.int)
        for rows, cols in groups:
            covered[rows, cols] += 1
        shapes = {tuple(covered[rows, cols].shape) for rows, cols in groups}
        assert covered.eq(1).all() and len(shapes) == 1, (b, h, pairs, groups)
        assert math.prod(shapes.pop()) <= pairs
    assert [len(_pair_groups(b, h, p)) for b, h, p in [(3, 8, 23), (1, 12, 8), (1, 7, 4)]] == [3, 2, 7]
    with pytest.raises(ValueError, match="pairs must be at least 1"):
        causal_linear_attention(*qkv(1, 2, 5, 4), pairs=0)
    with pytest.raises(ValueError, match=r"chunk_size must be at least 1 \(None: automatic\), got 0"):
        causal_linear_attention(*qkv(1, 2, 5, 4), chunk_size=0)


def test_the_causal_scan_groups_pairs_to_its_step_budget_on_cpu_in_inference_and_takes_all_otherwise():
    q = torch.empty(4, 8, 2048, 64)
    assert default_causal_pairs(q, q, q, positions=512) == CAUSAL_STEP_ELEMENTS // (512 * 64) == 8
    assert default_causal_pairs(q, q, q, positions=256, fused=True) == FUSED_CAUSAL_STEP_ELEMENTS // (256 * 64) == 8
    assert default_causal_pairs(q, q, q, positions=1 << 20) == 1  # at least one pair
    k = q.clone().requires_grad_()
    assert default_causal_pairs(q, k, q, positions=512) == 32  # a gradient wanted: all at once
    with torch.no_grad():
        assert default_causal_pairs(q, k, q, positions=512) == 8
    meta = torch.empty(4, 8, 2048, 64, device="meta")  # off CPU (CUDA): all at once
    assert default_causal_pairs(meta, meta, meta, positions=512) == 32


def test_the_default_causal_scan_runs_its_steps_on_groups_of_pairs_in_inference(monkeypatch):
    steps = []
    step = linear_module._causal_step
    monkeypatch.setattr(
        linear_module, "_causal_step", lambda q, *rest: steps.append(tuple(q.shape)) or step(q, *rest)
    )
    q, k, v = qkv(2, 8, 600, 64, seed=1)
    mask = padding(2, 600, seed=1)
    with torch.inference_mode():
        out = causal_linear_attention(q, k, v, key_padding_mask=mask)
    # 2 groups of 8 pairs (one batch element each) × segments of 512 + 88 positions
    assert steps == [(1, 8, 512, 64), (1, 8, 88, 64)] * 2
    assert rel_err(out, linear_attention_recurrent(q, k, v, key_padding_mask=mask)) <= TOL


def test_the_cpu_causal_defaults_are_the_timed_ones():
    """The values the comments above them in variants/linear.py report timings of."""
    assert (CPU_CHUNK, CHUNK) == (32, 64)
    assert (CAUSAL_SEGMENT, FUSED_CAUSAL_SEGMENT, GRAD_CAUSAL_SEGMENT) == (512, 256, 2048)
    assert (CAUSAL_STEP_ELEMENTS, FUSED_CAUSAL_STEP_ELEMENTS) == (1 << 18, 1 << 17)


@pytest.mark.parametrize(("grad", "steps"), [(False, [(512, 32), (512, 32), (76, 32)]), (True, [(1100, 64)])],
                         ids=["inference", "grad"])
def test_the_eager_causal_form_takes_its_path_s_steps_and_chunks(monkeypatch, grad, steps):
    seen = []
    segment = linear_module._causal_segment
    monkeypatch.setattr(
        linear_module, "_causal_segment",
        lambda fq, fk, v, tril, carried: seen.append((fq.shape[2], tril.shape[0])) or segment(fq, fk, v, tril, carried),
    )
    q, k, v = (t.requires_grad_(grad) for t in qkv(1, 8, 1100, 64, seed=2))
    with torch.set_grad_enabled(grad):
        out = causal_linear_attention(q, k, v)
    assert seen == steps
    assert rel_err(out.detach(), linear_attention_recurrent(q.detach(), k.detach(), v.detach())) <= TOL


def test_the_causal_chunk_is_cpus_inference_one_there_and_the_timed_one_otherwise():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert (CPU_CHUNK, CHUNK) == (32, 64)
    assert [default_causal_chunk(cpu, grad) for grad in (False, True)] == [CPU_CHUNK, CHUNK]
    assert [default_causal_chunk(cuda, grad) for grad in (False, True)] == [CHUNK, CHUNK]


@pytest.mark.parametrize("option", [0, 5], ids=["automatic", "given"])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "grad"])
def test_the_layers_causal_chunk_is_automatic_at_zero_and_the_given_one_otherwise(monkeypatch, option, grad):
    chunks = []
    segment = linear_module._causal_segment
    monkeypatch.setattr(
        linear_module, "_causal_segment", lambda *args: chunks.append(args[3].shape[0]) or segment(*args)
    )
    layer = build_variant("linear", d_model=32, n_heads=2, chunk_size=option)
    assert layer.options["chunk_size"] == option
    x = torch.randn(1, 80, 32)
    with torch.set_grad_enabled(grad):
        layer(x, causal=True)
    assert chunks and set(chunks) == {option or (CHUNK if grad else CPU_CHUNK)}


def test_a_broadcast_key_padding_mask_reaches_every_group_of_pairs():
    q, k, v = (t.detach() for t in qkv(3, 2, 45, 8, seed=4))
    mask = padding(2, 45, seed=3)[1:]  # (1, 45), some keys padded
    assert mask.any()
    with torch.no_grad():
        got = causal_linear_attention(q, k, v, chunk_size=4, key_padding_mask=mask, pairs=2)
    want = linear_attention_recurrent(q, k, v, key_padding_mask=mask.expand(3, -1))
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize(("n", "m"), [(7, 7), (50, 13), (9, 130)])
@pytest.mark.parametrize("segment", [None, 512, 4], ids=["whole", "segment-512", "segment-4"])
def test_global_linear_equals_quadratic_form(n, m, segment):
    q, k, v = qkv(2, 4, n, 8, seed=m, m=m)
    mask = padding(2, m, seed=n)
    assert_same(
        lambda q, k, v: global_linear_attention(q, k, v, key_padding_mask=mask, segment=segment),
        lambda q, k, v: linear_attention(q, k, v, key_padding_mask=mask)[0],
        [q, k, v],
    )


def test_the_global_form_goes_in_cache_sized_segments_on_cpu_in_inference_only():
    q, k, v = (t.detach() for t in qkv(1, 8, 4096, 64))
    assert GLOBAL_SEGMENT_ELEMENTS // (8 * 64) == 1024
    assert default_global_segment(q, k, v) == 1024
    assert default_global_segment(q[..., :4], k[..., :4], v) == GLOBAL_SEGMENT_ELEMENTS // (8 * 4)
    assert default_global_segment(q.expand(64, -1, -1, -1), k, v) == MIN_GLOBAL_SEGMENT  # b·h·d past the budget
    assert default_global_segment(q, k, v, fused=True) == FUSED_GLOBAL_SEGMENT_ELEMENTS // (8 * 64) == 2048
    # gradients wanted, or not a CPU: the whole sequence in one step (the longer of queries and keys)
    assert default_global_segment(q, k.requires_grad_(), v) == 4096
    meta = [torch.empty(1, 8, n, 64, device="meta") for n in (10, 5000, 5000)]
    assert default_global_segment(*meta) == 5000


def test_the_default_global_form_in_inference_equals_the_quadratic_form_over_several_segments(monkeypatch):
    monkeypatch.setattr(linear_module, "GLOBAL_SEGMENT_ELEMENTS", 2 * 4 * 8 * 16)  # 16 positions a step
    q, k, v = (t.detach() for t in qkv(2, 4, 50, 8, seed=11, m=37))
    mask = padding(2, 37, seed=12)
    with torch.no_grad():
        assert default_global_segment(q, k, v) == MIN_GLOBAL_SEGMENT  # the floor, so lower it too
        monkeypatch.setattr(linear_module, "MIN_GLOBAL_SEGMENT", 1)
        assert default_global_segment(q, k, v) == 16
        calls = []
        real_key_state = linear_module._key_state
        monkeypatch.setattr(linear_module, "_key_state", lambda *a: calls.append(a[0].shape[-2]) or real_key_state(*a))
        got = global_linear_attention(q, k, v, key_padding_mask=mask)
        want, _ = linear_attention(q, k, v, key_padding_mask=mask)
    assert calls == [16, 16, 5]  # the keys in three steps
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_feature_map_in_half_precision_keeps_exp(dtype):
    x = torch.linspace(-20, 5, 1001).to(dtype)
    assert torch.equal(_feature_values(x), x.clamp(max=0.0).exp() + x.relu())


def test_compiled_global_segments_take_many_lengths_within_the_recompile_limit(monkeypatch):
    from attnbench.variants import compiled as compiled_module

    monkeypatch.setattr(compiled_module, "RECOMPILE_LIMIT", 4)
    monkeypatch.setattr(compiled_module, "_COMPILED", {})  # fresh kernels, made under that limit
    monkeypatch.setattr(linear_module, "FUSED_GLOBAL_SEGMENT_ELEMENTS", 1 * 2 * 4 * 16)  # 16 positions a step
    monkeypatch.setattr(linear_module, "MIN_GLOBAL_SEGMENT", 1)
    with torch.no_grad():
        for n in range(17, 26):  # nine last-segment lengths: static full segments, one dynamic graph
            q, k, v = (t.detach() for t in qkv(1, 2, n, 4, seed=n))
            got = global_linear_attention(q, k, v, fused=True)
            assert rel_err(got, linear_attention(q, k, v)[0]) <= TOL


def test_the_compiled_causal_scan_over_groups_of_pairs_compiles_one_graph_a_step_shape(monkeypatch):
    # b = 3, h = 2 at 5 pairs a group: groups of 2 elements and then 1 would be two shapes, two
    # static graphs for the one step shape; groups of one element are one
    from attnbench.variants import compiled as compiled_module

    torch._dynamo.reset()  # dynamo keeps graphs per code object: none of _causal_step's yet
    monkeypatch.setattr(compiled_module, "RECOMPILE_LIMIT", 1)
    monkeypatch.setattr(compiled_module, "_COMPILED", {})  # a fresh kernel, made under that limit
    q, k, v = (t.detach() for t in qkv(3, 2, 8, 4, seed=6))
    mask = padding(3, 8, seed=6)
    fallbacks = eager_fallbacks()
    with torch.no_grad():
        got = causal_linear_attention(q, k, v, chunk_size=4, key_padding_mask=mask, segment=8, pairs=5, fused=True)
    assert eager_fallbacks() == fallbacks  # compiled code ran, not its eager form
    assert rel_err(got, linear_attention_recurrent(q, k, v, key_padding_mask=mask)) <= TOL


def test_the_compiled_global_form_in_inference_goes_compiled_segments_equal_to_the_quadratic_form(monkeypatch):
    monkeypatch.setattr(linear_module, "FUSED_GLOBAL_SEGMENT_ELEMENTS", 2 * 4 * 8 * 16)  # 16 positions a step
    monkeypatch.setattr(linear_module, "MIN_GLOBAL_SEGMENT", 1)
    q, k, v = (t.detach() for t in qkv(2, 4, 50, 8, seed=13, m=37))
    mask = padding(2, 37, seed=14)
    compiled, real_compile = [], linear_module.compile_kernel
    monkeypatch.setattr(
        linear_module, "compile_kernel", lambda fn, **kw: compiled.append(fn.__name__) or real_compile(fn, **kw)
    )
    fallbacks = eager_fallbacks()
    with torch.no_grad():
        got = global_linear_attention(q, k, v, key_padding_mask=mask, fused=True)
        want, _ = linear_attention(q, k, v, key_padding_mask=mask)
    assert rel_err(got, want) <= TOL
    assert compiled == ["_key_state", "_query_rows"] and eager_fallbacks() == fallbacks  # compiled steps ran


def test_the_cpu_feature_map_is_elu_plus_one_to_float_precision_across_its_range():
    x = torch.cat([torch.linspace(-87, 60, 20001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7])])
    exact = torch.where(x.double() > 0, x.double() + 1, x.double().exp())  # elu(x) + 1 in fp64
    got = _feature_values(x)
    # x·log₂e rounds to fp32 first, so the relative error grows with |x|: 5e-7 for |x| < 10
    assert torch.all((got.double() - exact).abs() / exact <= 1e-7 * (1 + x.double().abs()))
    assert torch.all(got > 0)  # positive where fp32's elu(x) + 1 has rounded to 0 (x below about -17)
    assert rel_err(got, feature_map(x)) <= 1e-6


def linear_kernel_and_reference(causal, mask, segment, chunk=4, fused=False):
    """(kernel, reference) on (q, k, v) with this key padding: the chunked causal form against the
    recurrent one, or the global form against the quadratic one (`fused`: the compiled kernel)."""
    if causal:
        return (
            lambda q, k, v: causal_linear_attention(
                q, k, v, chunk_size=chunk, key_padding_mask=mask, segment=segment, fused=fused
            ),
            lambda q, k, v: linear_attention_recurrent(q, k, v, key_padding_mask=mask),
        )
    return (
        lambda q, k, v: global_linear_attention(q, k, v, key_padding_mask=mask, segment=segment, fused=fused),
        lambda q, k, v: linear_attention(q, k, v, key_padding_mask=mask)[0],
    )


@pytest.mark.compiler
@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_fused_linear_equals_reference_with_gradients(causal):
    # kernel=compiled: causal, 45 = 20 + 20 + 5 at chunk 4 compiles the first segment's step (no
    # carried state), a carried one and a last segment of one padded chunk; global, one graph over
    # padded keys of another length than the queries
    n, m = (45, 45) if causal else (50, 13)
    q, k, v = qkv(2, 2, n, 8, seed=5, m=m)
    mask = padding(2, m, seed=2)
    kernel, reference = linear_kernel_and_reference(causal, mask, segment=20, fused=True)
    fallbacks = eager_fallbacks()
    assert_same(kernel, reference, [q, k, v])
    assert eager_fallbacks() == fallbacks  # compiled code ran, not its eager form


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_linear_row_with_every_key_padded_gives_zeros_like_the_reference(causal):
    # nothing to attend to: numerator and normaliser sums are 0, the denominator EPS alone. Causal:
    # 45 = 20 + 20 + 5 at chunk 4 (carried state, padded last chunk); global: 3 key segments of 8
    n, m = (45, 45) if causal else (30, 21)
    q, k, v = qkv(3, 2, n, 8, seed=4, m=m)
    mask = padding(3, m, seed=6)
    mask[1] = True
    kernel, reference = linear_kernel_and_reference(causal, mask, segment=20 if causal else 8)
    assert_same(kernel, reference, [q, k, v])

    out, ref = kernel(q, k, v), reference(q, k, v)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all() and (ref[1] == 0).all()
    assert out[0].abs().amax() > 0.1  # the unpadded row is not zero
    grads = torch.autograd.grad(out.sum(), [q, k, v])
    for name, grad in zip("qkv", grads):
        assert torch.isfinite(grad).all(), name
        assert (grad[1] == 0).all(), f"the fully padded row passes a gradient to {name}"


def left_padding(m, lengths):
    """(b m) mask with the padded positions first: row i keeps its last lengths[i] keys."""
    return torch.arange(m)[None, :] < (m - torch.tensor(lengths))[:, None]


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_linear_with_left_padding_equals_reference(causal):
    # padding before the real keys, over several segments: causal, 45 = 20 + 20 + 5 at chunk 4, and
    # row 2's first two segments are wholly padded (a zero carried state); global, 37 = 4 × 8 + 5
    n, m = (45, 45) if causal else (23, 37)
    lengths = [m, m - 13, 3]
    q, k, v = qkv(3, 2, n, 8, seed=8, m=m)
    mask = left_padding(m, lengths)
    kernel, reference = linear_kernel_and_reference(causal, mask, segment=20 if causal else 8)
    assert_same(kernel, reference, [q, k, v])

    out = kernel(q, k, v).detach()
    assert torch.isfinite(out).all()
    if causal:  # a query before a row's first real key sees nothing: output 0, and only there
        for row, length in enumerate(lengths):
            first = m - length
            assert (out[row, :, :first] == 0).all()
            assert (out[row, :, first:].abs().amax(dim=-1) > 0).all()


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)], ids=["fp16", "bf16"])
def test_linear_core_in_half_precision_matches_fp32_reference(dtype, tol, causal):
    # inputs × 4 over 512 positions: sums that fp16 would overflow or badly round (a core that did
    # not compute in fp32 is off by 0.4 (global) and 0.04 (causal) here in fp16)
    layer = build_variant("linear", d_model=64, n_heads=4, chunk_size=16)
    n = 512
    q, k, v = qkv(2, 4, n, 16, seed=11)
    with torch.no_grad():
        for t in (q, k, v):
            t.mul_(4.0)
    mask = padding(2, n, seed=3)
    ref = linear_attention(q, k, v, key_padding_mask=mask, causal=causal, eps=EPS)[0]
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(99))
    ref_grads = torch.autograd.grad((ref * probe).sum(), [q, k, v])

    low = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out, weights = layer.core(*low, mask, causal, False)
    assert weights is None
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out.float(), ref) <= tol, f"outputs differ: {rel_err(out.float(), ref):.2e}"
    grads = torch.autograd.grad((out * probe.to(dtype)).sum(), low)
    for name, grad, want in zip("qkv", grads, ref_grads):
        assert grad.dtype == dtype and torch.isfinite(grad).all(), name
        assert rel_err(grad.float(), want) <= tol, f"gradient {name} differs: {rel_err(grad.float(), want):.2e}"


def test_linear_feature_map_matches_elu_plus_one_with_its_gradient():
    """The kernels' φ (exp(min(x, 0)) + max(x, 0), derivative from the output) against elu + 1,
    at 0, on both sides of it and far out, where exp underflows or the linear side is large."""
    x = torch.tensor([-100.0, -20.0, -1.0, -1e-7, 0.0, 1e-7, 0.5, 3.0, 1e4], dtype=torch.float64)
    fast, slow = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = _features(fast), feature_map(slow)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-15)
    weights = torch.linspace(0.5, 2.0, len(x), dtype=x.dtype)  # a non-uniform upstream gradient
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.allclose(fast.grad, slow.grad, rtol=1e-12, atol=1e-15)


def test_recurrent_and_quadratic_causal_linear_agree():
    q, k, v = qkv(1, 2, 29, 8, seed=1)
    with torch.no_grad():
        recurrent = linear_attention_recurrent(q, k, v)
        quadratic, _ = linear_attention(q, k, v, causal=True)
    assert rel_err(recurrent, quadratic) <= TOL


# ------------------------------------------------------------------------------ additive
class OpSizes(TorchDispatchMode):
    """Records each op's output tensors, forward and backward: (op, elements) of every one."""

    def __init__(self):
        super().__init__()
        self.outputs: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.outputs += [(func, t.numel()) for t in (out if isinstance(out, (tuple, list)) else (out,))
                         if isinstance(t, torch.Tensor)]
        return out

    def ops_making(self, numel: int) -> list:
        """The ops, in order, that produced a tensor of `numel` elements."""
        return [func for func, size in self.outputs if size == numel]

    @property
    def largest(self) -> int:
        """The most elements of any tensor an op produced."""
        return max((size for _, size in self.outputs), default=0)


@pytest.mark.parametrize(("heads", "chunk", "n", "m"), [(1, 1, 9, 9), (2, 4, 33, 20), (4, 0, 17, 17), (1, 7, 50, 3)])
def test_chunked_additive_equals_materialized_reference(heads, chunk, n, m):
    torch.manual_seed(heads * 100 + n)
    layer = build_variant("additive", d_model=32, heads=heads, chunk_size=chunk)
    q, k, v = qkv(2, heads, n, 32 // heads, seed=n, m=m)
    mask = padding(2, m, seed=chunk)
    w = layer.score_vector
    causal = n == m
    assert_same(
        lambda q, k, v, w: layer.core(q, k, v, mask, causal, False)[0],
        lambda q, k, v, w: additive_attention(q, k, v, w, key_padding_mask=mask, causal=causal)[0],
        [q, k, v, w],
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("b", "chunk", "n", "m"), [(2, 4, 33, 20), (1, 5, 5, 7), (3, 7, 50, 3), (2, 0, 17, 17),
                                                    (2, 1, 6, 6)])
def test_additive_inference_gives_the_same_numbers_as_the_chunked_form(b, chunk, n, m, dtype):
    # without gradients the chunks' scores are written into one output, each block into one reused
    # buffer (a shorter last chunk its own): the same ops as the chunks the gradient path concatenates
    torch.manual_seed(n)
    layer = build_variant("additive", d_model=32, heads=2, chunk_size=chunk).to(dtype)
    q, k, v = (t.to(dtype) for t in qkv(b, 2, n, 16, seed=n, m=m))
    mask = padding(b, m, seed=chunk)
    for causal in {False, n == m}:
        with torch.inference_mode():
            fast = layer.core(q, k, v, mask, causal, False)[0]
            w, rows = layer.score_vector, chunk or n
            chunked = torch.cat([additive_module._scores(q[:, :, i : i + rows], k, w) for i in range(0, n, rows)], dim=2)
            assert torch.equal(additive_module._inference_scores(q, k, w, rows), chunked)
            want = additive_attention(q, k, v, w, key_padding_mask=mask, causal=causal)[0]
        with_grad = layer.core(q, k, v, mask, causal, False)[0]  # the score vector wants a gradient: the chunk list
        assert torch.equal(fast, with_grad.detach())
        assert rel_err(fast, want) <= TOL


def _allocates(func) -> bool:
    """Whether an aten op returns new memory: not a view, not in place, not written into `out=`."""
    return all(ret.alias_info is None for ret in func._schema.returns)


@pytest.mark.parametrize("n", [16, 15], ids=["even", "short-last"])
def test_additive_makes_no_block_per_chunk_with_or_without_gradients(monkeypatch, n):
    # every chunk's block is computed into one reused buffer (a shorter last chunk into its first
    # elements): one block is allocated for the forward and, with gradients, one for the backward,
    # where the chunk list through `checkpoint` made three per chunk; `_blockwise_scores` is what
    # core calls
    layer = build_variant("additive", d_model=32, heads=2, chunk_size=4)
    x = torch.randn(2, n, 32, requires_grad=True)
    blocks = {2 * 2 * rows * n * 16 for rows in (4, n % 4 or 4)}  # b h c m d: chunks of 4 rows, the last n % 4

    calls = []
    monkeypatch.setattr(additive_module, "_blockwise_scores",
                        lambda *args, f=additive_module._blockwise_scores: calls.append(args[3]) or f(*args))
    for inference in (True, False):
        with torch.inference_mode(inference), OpSizes() as mode:
            out, _ = layer(x)
            if not inference:
                out.sum().backward()
        made = [func for size in blocks for func in mode.ops_making(size) if _allocates(func)]
        assert made == [torch.ops.aten.new_empty.default] * (1 if inference else 2), (inference, made)
    assert calls == [4, 4]
    assert x.grad is not None and layer.score_vector.grad is not None


@pytest.mark.parametrize(("n", "rows"), [(7, 3), (6, 2), (5, 5), (4, 9)], ids=["short-last", "even", "one", "wider"])
def test_additive_blockwise_scores_backward_passes_gradcheck_in_fp64(n, rows):
    # several chunks (their blocks recomputed in backward, the last shorter or not) and one chunk
    # (its block kept from the forward pass)
    gen = torch.Generator().manual_seed(n)
    q = torch.randn(2, 3, n, 5, generator=gen, dtype=torch.float64, requires_grad=True)  # b h n d
    k = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)  # b h m d
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    scores = lambda q, k, w: additive_module._BlockwiseScores.apply(q, k, w, rows)  # noqa: E731
    assert torch.autograd.gradcheck(scores, (q, k, w))
    want = torch.einsum("bhcmd,hd->bhcm", torch.tanh(q[:, :, :, None] + k[:, :, None]), w)
    assert rel_err(scores(q, k, w), want) <= 1e-13
    probe = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    for wanted in ((0,), (1,), (2,), (0, 2), (1, 2)):  # only some of them want a gradient: backward skips the rest
        inputs = [t.detach().requires_grad_(i in wanted) for i, t in enumerate((q, k, w))]
        got = torch.autograd.grad((scores(*inputs) * probe).sum(), [inputs[i] for i in wanted])
        for i, g in zip(wanted, got):
            r = torch.autograd.grad((want * probe).sum(), (q, k, w)[i], retain_graph=True)[0]
            assert rel_err(g, r) <= 1e-12


@pytest.mark.parametrize("rows", [2, 3, 7])
def test_additive_blockwise_scores_count_their_products_forward_and_backward(rows):
    # the scores and the three gradients are one (b h n m d)-sized product each, however the rows
    # are chunked (the recomputed blocks are element-wise: no FLOPs); the accumulating products
    # count too (torch's own FLOP table skips `baddbmm_`)
    from attnbench.runner.measure import count_flops

    b, h, n, m, d = 2, 3, 7, 5, 4
    q, k = torch.randn(b, h, n, d, requires_grad=True), torch.randn(b, h, m, d, requires_grad=True)
    w = torch.randn(h, d, requires_grad=True)
    assert count_flops(lambda: additive_module._BlockwiseScores.apply(q, k, w, rows).sum().backward()) == 8 * b * h * n * m * d


def test_additive_runs_on_meta_tensors_so_its_flops_are_counted_without_computing():
    # `bench perf` counts FLOPs on meta tensors; asking meta whether autocast is on raised, and the
    # count fell back to a real call
    from attnbench.runner.measure import count_flops

    b, h, n, m, d = 1, 2, 12, 12, 8
    layer = build_variant("additive", d_model=h * d, heads=h, chunk_size=5)
    real = [torch.randn(b, h, n, d) for _ in range(3)]
    meta = [t.to("meta") for t in real]
    meta_layer = copy.deepcopy(layer).to("meta")
    with torch.inference_mode():
        on_meta = count_flops(lambda: meta_layer.core(*meta, None, False, False))
        assert on_meta == count_flops(lambda: layer.core(*real, None, False, False))
    assert on_meta == 2 * b * h * n * m * d + 2 * b * h * n * m * d  # the scores, then weights @ v


def test_additive_blockwise_backward_twice_reads_the_kept_block_unchanged():
    # one chunk keeps its block for backward; the gradient of that block must not overwrite it,
    # so a second backward through the same graph (retain_graph) gives the same gradients
    gen = torch.Generator().manual_seed(8)
    q, k = (torch.randn(1, 2, 5, 4, generator=gen, requires_grad=True) for _ in range(2))
    w = torch.randn(2, 4, generator=gen, requires_grad=True)
    loss = additive_module._BlockwiseScores.apply(q, k, w, 8).square().sum()
    first = torch.autograd.grad(loss, (q, k, w), retain_graph=True)
    second = torch.autograd.grad(loss, (q, k, w))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_additive_inference_goes_through_vmap_and_jvp():
    # torch.func's wrapped tensors and forward-mode tangents cannot take the `out=` writes: the
    # chunk list's path takes them, with the same numbers
    layer = build_variant("additive", d_model=32, heads=2, chunk_size=4)
    layer.score_vector.requires_grad_(False)  # no gradient wanted: the inference path, but for the transforms
    q, k, v = (t.detach() for t in qkv(2, 2, 9, 16, seed=4))
    core = lambda q: layer.core(q, k, v, None, False, False)[0]  # noqa: E731
    batch = torch.stack([q, 2 * q])
    assert torch.allclose(torch.func.vmap(core)(batch), torch.stack([core(q), core(2 * q)]), atol=1e-6)
    _, tangent = torch.func.jvp(core, (q,), (torch.ones_like(q),))
    step = 1e-3
    numeric = (core(q + step) - core(q - step)) / (2 * step)
    assert rel_err(tangent, numeric) <= 1e-2
    import torch.autograd.forward_ad as fwAD  # forward mode without torch.func: a dual tensor

    with fwAD.dual_level(), torch.no_grad():
        dual_tangent = fwAD.unpack_dual(core(fwAD.make_dual(q, torch.ones_like(q)))).tangent
    assert rel_err(dual_tangent, numeric) <= 1e-2


def test_additive_score_is_v_dot_tanh_of_the_sum():
    torch.manual_seed(0)
    q, k, v = qkv(1, 1, 2, 3, seed=5)
    w = torch.randn(1, 3)
    _, weights = additive_attention(q, k, v, w)
    by_hand = torch.stack([torch.stack([w[0] @ torch.tanh(q[0, 0, i] + k[0, 0, j]) for j in range(2)]) for i in range(2)])
    assert torch.allclose(weights[0, 0], by_hand.softmax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_additive_scores_equal_the_tanh_form_from_zero_to_saturation(dtype):
    gen = torch.Generator().manual_seed(3)
    q = torch.cat([torch.zeros(1, 2, 1, 4), 1e-4 * torch.randn(1, 2, 2, 4, generator=gen),
                   torch.randn(1, 2, 3, 4, generator=gen), 30 * torch.randn(1, 2, 2, 4, generator=gen)], dim=2)
    k = torch.cat([torch.zeros(1, 2, 1, 4), torch.randn(1, 2, 5, 4, generator=gen)], dim=2)
    w = torch.randn(2, 4, generator=gen)
    q, k, w = q.repeat(3, 1, 1, 1).to(dtype), k.repeat(3, 1, 1, 1).to(dtype), w.to(dtype)  # b = 3
    exact = torch.einsum("bhcmd,hd->bhcm", torch.tanh(q.double()[:, :, :, None] + k.double()[:, :, None]), w.double())
    got = additive_module._scores(q, k, w)
    assert got.dtype == dtype and got.shape == (3, 2, 8, 6)
    tol = {torch.float32: 1e-6, torch.float64: 1e-14, torch.bfloat16: 2e-2}[dtype]
    assert rel_err(got.double(), exact) <= tol
    # near 0 (q ~ 1e-4, k = 0) each score to its own size: half precision keeps tanh, since
    # 2σ(2x) − 1 would round σ(2e-4) to bf16's 0.5 and the scores to 0
    small, small_exact = got[:, :, 1:3, 0].double(), exact[:, :, 1:3, 0]
    assert ((small - small_exact).abs() / small_exact.abs()).max() <= (5e-2 if dtype == torch.bfloat16 else 1e-2)


def test_additive_sigmoid_scores_backward_passes_gradcheck_in_fp64():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)  # b h c d
    k = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)  # b h m d
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, w: additive_module._SigmoidScores.apply(q, k, w)[0], (q, k, w))


def test_additive_sigmoid_scores_go_through_torch_func_grad_and_vmap():
    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 6, 5, generator=gen)
    w = torch.randn(3, 5, generator=gen)

    def tanh_form(q, k, w):
        return torch.einsum("bhcmd,hd->bhcm", torch.tanh(q[:, :, :, None] + k[:, :, None]), w).square().sum()

    def sigmoid_form(q, k, w):
        return additive_module._scores(q, k, w).square().sum()

    got = torch.func.grad(sigmoid_form, argnums=(0, 1, 2))(q, k, w)
    want = torch.func.grad(tanh_form, argnums=(0, 1, 2))(q, k, w)
    for g, r in zip(got, want):
        assert rel_err(g, r) <= TOL
    batched = torch.func.vmap(lambda q: additive_module._scores(q, k, w))(q[None].expand(3, -1, -1, -1, -1))
    assert rel_err(batched[1], additive_module._scores(q, k, w)) <= TOL


def test_the_additive_layer_never_copies_the_block_from_its_projected_inputs():
    # the projections hand the core (b n h d) memory as (b h n d): made contiguous once, every
    # view of a chunk's block is a view, forward and backward
    layer = build_variant("additive", d_model=32, heads=2, chunk_size=4)
    x = torch.randn(3, 16, 32, requires_grad=True)
    block = 3 * 2 * 4 * 16 * 16  # b h c m d

    with OpSizes() as mode:
        out, _ = layer(x)
        out.sum().backward()
    ops = [func.__name__ for func in mode.ops_making(block)]
    assert ops and not [op for op in ops if "copy" in op or "clone" in op], ops


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("name", ["additive", "linear", "linear(kernel=compiled)"])
def test_an_empty_batch_gives_an_empty_output(name, grad, causal):
    options = {"kernel": "compiled"} if "compiled" in name else {}
    layer = build_variant(name.split("(")[0], d_model=16, n_heads=2, **options)
    for shape in ((0, 5, 16), (2, 0, 16)):  # no batch, no positions
        x = torch.zeros(*shape, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            out, _ = layer(x, causal=causal)
        assert out.shape == shape
        if grad:  # the output stays in the graph: an (empty) gradient for x
            assert torch.autograd.grad(out.sum(), x)[0].shape == shape


# ------------------------------------------------------------------------------ memory shape
def largest_tensor(name: str, n: int, causal: bool, **options) -> int:
    torch.manual_seed(0)
    layer = build_variant(name, d_model=64, n_heads=4, **options)
    x = torch.randn(1, n, 64, requires_grad=True)
    with OpSizes() as mode:
        out, _ = layer(x, causal=causal)
        out.sum().backward()
    return mode.largest


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "options"), [("local", {"window": 32}), ("linear", {})])
def test_local_and_linear_memory_grows_linearly_and_never_n_by_n(name, options, causal):
    heads, n = 4, 2048
    largest = largest_tensor(name, n, causal, **options)
    half = largest_tensor(name, n // 2, causal, **options)
    assert largest < heads * n * n // 8, f"{name} formed {largest} elements (h·n² = {heads * n * n})"
    assert largest / half <= 2.2, f"{name}: largest tensor grew {largest / half:.2f}× for 2× n"


def test_additive_never_forms_the_whole_tanh_block():
    n = 512
    largest = largest_tensor("additive", n, causal=False)
    assert largest <= max(CHUNK_ELEMENTS, n * n), largest
    assert largest < n * n * 64 // 2  # the (b, h, n, m, d) tensor the naive form needs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "window"), [(300, 16), (1000, 128), (4096, 128)])
def test_on_cuda_the_blocks_go_in_one_group_with_a_cached_bias_and_match_the_reference(n, window, causal):
    q, k, v = (torch.randn(1, 2, n, 32, device="cuda") for _ in range(3))
    want, _ = full_attention(q, k, v, causal=causal, window=window)
    with torch.inference_mode():  # builds the bias; a later call with gradients may save it
        torch.testing.assert_close(sliding_window_attention(q, k, v, window=window, causal=causal), want,
                                   rtol=1e-4, atol=1e-4)
    q.requires_grad_()
    out = sliding_window_attention(q, k, v, window=window, causal=causal)
    out.sum().backward()
    ref_q = q.detach().clone().requires_grad_()
    full_attention(ref_q, k, v, causal=causal, window=window)[0].sum().backward()
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(q.grad, ref_q.grad, rtol=1e-4, atol=1e-4)
    assert local_module._cached_bias.cache_info().currsize >= 1
