"""`local` with `kernel=compiled`: FlexAttention over the band's tiles (variants/local_flex.py).

The block mask is listed from the window, so it is checked tile by tile against FlexAttention's
own `create_block_mask`, which evaluates the mask at every entry. The attention itself is checked
against the naive reference (forward only: torch has no FlexAttention backward on CPU).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from attnbench import build_variant
from attnbench.benchmarks.suite import PerfConfig, run_suite
from attnbench.benchmarks.targets import check_targets
from attnbench.errors import UnsupportedError
from attnbench.runner import measure
from attnbench.runner.measure import CPU_ALLOCATOR_METHOD, CPU_EAGER_PATH_METHOD, count_flops, peak_memory
from attnbench.variants.check import PASS, SKIP, run_check
from attnbench.variants.compiled import eager_fallbacks
from attnbench.variants.local import sliding_window_attention
from attnbench.variants import local_flex
from attnbench.variants.local_flex import (
    TILE,
    _cached_block_mask,
    flex_window_attention,
    tiled_window_attention,
    window_block_mask,
)
from attnbench.variants.reference import full_attention



def padding(n: int) -> torch.Tensor:
    """(2, n) key padding: the first sequence all keys, the second its first half."""
    return torch.arange(n)[None, :] >= torch.tensor([n, max(1, n // 2)])[:, None]


def entry_mask(window: int, causal: bool, pad: torch.Tensor | None):
    def mask_mod(b, h, q_idx, kv_idx):
        offset = q_idx - kv_idx
        seen = (offset >= 0) & (offset < window) if causal else (offset < window) & (offset > -window)
        return seen if pad is None else seen & ~pad[b, kv_idx]
    return mask_mod


@pytest.mark.parametrize("n", [1, 100, TILE, 300, 1000])
@pytest.mark.parametrize("window", [1, 5, 127, 128, 129, 300, 2000])
@pytest.mark.parametrize("causal", [False, True])
def test_the_listed_tiles_are_those_the_mask_touches_and_the_full_ones_are_full(n, window, causal):
    ours = window_block_mask(n, window, causal, torch.device("cpu"))
    theirs = create_block_mask(entry_mask(window, causal, None), None, None, n, n, device="cpu")
    assert torch.equal(ours.to_dense(), theirs.to_dense())  # every tile the band touches, no other
    assert torch.equal(full_tiles(ours), full_tiles(theirs))  # a full tile skips the mask: wholly inside


def full_tiles(bm) -> torch.Tensor:
    """(query tiles × key tiles) booleans: the tiles a BlockMask marks full."""
    dense = torch.zeros(bm.kv_indices.shape[-2:], dtype=torch.bool)
    if bm.full_kv_num_blocks is not None:
        for row, (count, indices) in enumerate(zip(bm.full_kv_num_blocks[0, 0], bm.full_kv_indices[0, 0])):
            dense[row, indices[:count].long()] = True
    return dense


def test_with_padding_no_tile_is_full_so_the_padding_is_applied_everywhere():
    bm = window_block_mask(300, 200, False, torch.device("cpu"), padding(300))
    assert int(bm.full_kv_num_blocks.sum()) == 0 and int(bm.kv_num_blocks.sum()) > 0


@pytest.mark.compiler
@pytest.mark.parametrize(
    ("n", "window", "causal", "pad", "d"),
    [(300, 129, False, True, 16), (130, 16, True, False, 16), (7, 400, True, True, 16), (200, 3, False, False, 16),
     (384, 256, False, False, 16), (512, 300, True, False, 16),  # full tiles: their mask is not evaluated
     (150, 20, True, True, 8)],  # d = 8: zero-padded to the 16 FlexAttention's CUDA kernel needs
)
def test_outputs_equal_the_naive_reference(n, window, causal, pad, d):
    torch.manual_seed(n)
    q, k, v = (torch.randn(2, 3, n, d) for _ in range(3))
    mask = padding(n) if pad else None
    if pad and n == 7:
        mask[0] = True  # every key of the first sequence hidden: zeros, as SDPA and the blocked path
    with torch.no_grad():
        got = flex_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=mask)
    want, _ = full_attention(q, k, v, key_padding_mask=mask, causal=causal, window=window)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not got.isnan().any()


def test_the_cached_block_mask_made_in_inference_mode_can_serve_a_backward():
    # bench run times a forward in inference mode, then forward + backward at the same shape (CUDA)
    _cached_block_mask.cache_clear()
    with torch.inference_mode():
        bm = _cached_block_mask(300, 64, False, torch.device("cpu"))
    assert not any(t.is_inference() for t in (bm.kv_num_blocks, bm.kv_indices, bm.q_num_blocks, bm.q_indices))


@pytest.mark.compiler
def test_on_cpu_a_call_that_needs_gradients_is_refused_in_one_line():
    layer = build_variant("local", d_model=32, n_heads=4, window=8, kernel="compiled")
    with pytest.raises(UnsupportedError, match=r"^local: kernel=compiled \(FlexAttention\) has no backward on CPU"):
        layer(torch.randn(2, 20, 32))
    with torch.no_grad():
        out, _ = layer(torch.randn(2, 20, 32))
    assert out.shape == (2, 20, 32)


@pytest.mark.compiler
def test_on_cpu_float64_is_refused_in_one_line():
    layer = build_variant("local", d_model=8, n_heads=2, window=4, kernel="compiled").double()
    with torch.no_grad(), pytest.raises(UnsupportedError, match=r"^local: kernel=compiled \(FlexAttention\) takes "
                                                                r"fp32, fp16 and bf16 on CPU in torch .*, not float64"):
        layer(torch.randn(1, 8, 8, dtype=torch.float64))  # before: inductor's LoweringException, pages long


@pytest.mark.compiler
def test_bench_check_runs_forward_only_and_says_so():
    shape = run_check("local", "shape", {"window": 8, "kernel": "compiled"})
    grads = run_check("local", "finite-grad", {"window": 8, "kernel": "compiled"})
    assert shape.status == PASS and shape.detail.endswith("(forward only)")
    assert grads.status == SKIP and "has no backward on CPU" in grads.detail
    eager = run_check("local", "shape", {"window": 8})
    assert eager.status == PASS and "forward only" not in eager.detail
    reference = run_check("local", "reference", {"window": 8, "kernel": "compiled"})  # layer outputs vs naive
    assert reference.status == PASS and reference.detail.endswith("(forward only)"), reference.detail


@pytest.mark.compiler
def test_under_the_memory_counter_the_tiled_path_runs_and_is_counted_then_flex_from_allocator_events(monkeypatch):
    q, k, v = (torch.randn(1, 2, 300, 16) for _ in range(3))
    box = {}
    call = lambda: box.update(out=flex_window_attention(q, k, v, window=64))  # noqa: E731
    call()  # compiled outside the count
    fallbacks = eager_fallbacks()
    peak, method = peak_memory(call, device="cpu")
    assert method == CPU_ALLOCATOR_METHOD and eager_fallbacks() == fallbacks + 1
    assert peak >= box["out"].nbytes  # the last call ran FlexAttention, its output counted
    monkeypatch.setattr(measure, "allocator_peak", lambda fn: None)  # no allocator events
    _, method = peak_memory(call, device="cpu")
    assert method == CPU_EAGER_PATH_METHOD
    assert torch.equal(box["out"], tiled_window_attention(q, k, v, window=64))  # the tiled eager path ran


def test_on_a_torch_whose_flex_attention_lacks_seq_lengths_building_it_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(local_flex, "HAS_SEQ_LENGTHS", False)
    with pytest.raises(UnsupportedError, match=r"^local: kernel=compiled needs FlexAttention from torch >= 2\.6 \(this is "):
        build_variant("local", d_model=32, n_heads=4, window=8, kernel="compiled")
    assert build_variant("local", d_model=32, n_heads=4, window=8) is not None  # eager needs none


def test_on_meta_tensors_it_gives_the_shape_and_its_flops_are_the_tiles_the_kernel_multiplies():
    q, k, v = (torch.empty(1, 8, 512, 64, device="meta") for _ in range(3))
    assert flex_window_attention(q, k, v, window=256).shape == (1, 8, 512, 64)
    # 14 of the 4 × 4 tiles (the corners' are outside the band), 4·128·128·64 FLOPs each per head
    assert window_block_mask(512, 256, False, "cpu").kv_num_blocks.sum() + \
        window_block_mask(512, 256, False, "cpu").full_kv_num_blocks.sum() == 14
    assert count_flops(lambda: flex_window_attention(q, k, v, window=256)) == 14 * 4 * 128 * 128 * 64 * 8
    empty = torch.empty(1, 2, 0, 16)
    assert tiled_window_attention(empty, empty, empty, window=4).shape == (1, 2, 0, 16)  # no tile, no row


@pytest.mark.parametrize("n", [1, 100, 128, 300, 700])
@pytest.mark.parametrize("window", [1, 64, 128, 1000])
@pytest.mark.parametrize("causal", [False, True])
def test_the_tiled_eager_path_equals_the_blocked_one_and_crosses_the_block_mask_s_tiles(n, window, causal):
    gen = torch.Generator().manual_seed(n + window)
    q, k, v = (torch.randn(2, 2, n, 16, generator=gen) for _ in range(3))
    mask = torch.rand(2, n, generator=gen) < 0.3
    mask[1] = True  # every key hidden: zeros, as the kernel gives
    for padding in (None, mask):
        got = tiled_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=padding)
        want = sliding_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=padding)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    blocks = window_block_mask(n, window, causal, "cpu")
    tiles = int(blocks.kv_num_blocks.sum()) + int(blocks.full_kv_num_blocks.sum())
    lo, hi = (0 if causal else 1 - window), window - 1
    assert sum(-(-(stop - first) // TILE) for first, stop in local_flex._key_tiles(n, lo, hi)) == tiles


@pytest.mark.compiler
def test_bench_perf_times_it_beside_the_blocked_kernel_and_shares_its_naive_and_peer_rows():
    tiny = dict(lengths=(256,), batches=(1,), repeat=1, min_run_time=0.001, memory_probes=())
    rows = run_suite(PerfConfig(variants=("local",), **tiny), log=lambda line: None)
    flex = "local(window=128, kernel=compiled)"
    impls = {r["impl"] for r in rows if r["case"] == flex}
    assert impls == {"core", "layer"}  # naive and peer: those of local(window=128), same rounds
    assert any(r["case"] == "local(window=128)" and r["impl"] == "naive" for r in rows)
    core = next(r for r in rows if r["case"] == flex and r["impl"] == "core")
    assert core["status"] == "ok" and core["verified"]
    peer = next(r for r in rows if r["case"] == "local(window=128)" and r["impl"] == "peer:local-attention")
    if peer["median_s"] is not None:  # the peer is installed
        assert core["ratio_vs_peer"] == pytest.approx(core["median_s"] / peer["median_s"])
    memory = next(t for t in check_targets(rows) if t.name.startswith(f"{flex}: peak memory"))
    # the twin's naive row was found, and FlexAttention's own allocations were counted
    assert memory.status in ("PASS", "FAIL") and "the compiled kernel's" in memory.detail and "vs naive" in memory.detail
    alone = run_suite(PerfConfig(variants=(flex,), **tiny), log=lambda line: None)
    assert "naive" in {r["impl"] for r in alone if r["case"] == flex}  # no twin in the run: its own


@pytest.mark.compiler
def test_bench_run_on_cpu_records_its_training_cells_unsupported(tmp_path, bench):
    from attnbench.runner.store import read_records

    out = tmp_path / "run"
    code = bench("run", "--profile", "smoke", "--variants", "local(window=4,kernel=compiled)", "--tasks", "copy",
                 "--kinds", "accuracy", "--device", "cpu", "--out", out, "--quiet")
    assert code == 0
    (record,) = read_records(out)
    assert record["status"] == "unsupported"
    assert record["message"].startswith("local: kernel=compiled (FlexAttention) has no backward on CPU")
