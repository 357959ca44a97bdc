"""Reports and comparison of run directories: tables from hand-made runs with known numbers, the CLI."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from attnbench.runner.report import (
    accuracy_frame,
    accuracy_table,
    compare_runs,
    distance_frame,
    effective_range,
    efficiency_frame,
    incomparable_settings,
    load_run,
    long_range_frame,
    long_range_table,
    render_markdown,
    scaling_exponent,
    scaling_frame,
    window_reach,
)
from support import one_error_line

SAMPLE = Path("/tmp/sample-quick")

ENV = {
    "argv": ["bench", "run", "--variants", "all"],
    "attnbench": "0.1.0",
    "cpu": "Test CPU 9000",
    "cpu_count": 2,
    "created": "2026-01-02T03:04:05+00:00",
    "cuda_device": None,
    "device": "cpu",
    "dtype": "fp32",
    "git_sha": "abc1234def",
    "matmul_peak_flops": 123.4e9,
    "matmul_peak_dtype": "fp32",
    "platform": "Linux-test",
    "python": "3.11.7",
    "threads": 2,
    "torch": "2.13.0+cpu",
}


def grid(**extra) -> dict:
    return {
        "profile": "quick",
        "variants": ["multi-head", "local(window=4)"],
        "tasks": ["task-a"],
        "seeds": [0],
        "size": {"d_model": 64, "n_heads": 4, "n_layers": 2, "mlp_ratio": 2},
        "train": {"steps": 200, "batch_size": 32, "lr": 0.003, "n_train": 2048, "n_test": 512},
        "efficiency": {"batch": 1, "d_model": 128, "n_heads": 4, "lengths": [256, 1024, 4096]},
        "device": "cpu",
        "dtype": "fp32",
        **extra,
    }


def write_run(path: Path, records: list[dict], *, env: dict | None = None, grid_: dict | None = None) -> Path:
    """A run directory as `bench run` leaves it: env.json, grid.json, cells.jsonl."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "env.json").write_text(json.dumps(ENV if env is None else env, indent=2))
    (path / "grid.json").write_text(json.dumps(grid() if grid_ is None else grid_, indent=2))
    (path / "cells.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def _label(name: str, options: dict) -> str:
    return name if not options else f"{name}({', '.join(f'{k}={options[k]}' for k in sorted(options))})"


def acc(variant: str, task: str, score: float | None = None, *, seed: int = 0, n: int = 32, status: str = "ok",
        metric: str = "accuracy", chance: float = 0.5, by_distance: dict | None = None, options: dict | None = None,
        baseline: float | None = None, baselines: dict | None = None, message: str = "") -> dict:
    """An accuracy record shaped as the runner writes it."""
    options = options or {}
    vlabel = _label(variant, options)
    result = None
    if status == "ok":
        result = {
            "accuracy": score if metric != "bits_per_byte" else 0.4, "exact_match": score, "metric": metric,
            "score": score, "chance": chance, "steps": 200, "train_seconds": 1.0, "tokens_per_s": 1e5,
            "valid_accuracy": score, "n_eval": 512, "n_params": 70000,
            "curve": [{"loss": 0.1, "step": 50, "valid_accuracy": 0.5}],
        }
        if by_distance is not None:
            result["by_distance"] = {str(k): {"accuracy": a, "count": c} for k, (a, c) in by_distance.items()}
        if baseline is not None:
            result["baseline_bits_per_byte"] = baseline
        if baselines is not None:
            result["baselines"] = baselines
    return {
        "key": f"accuracy/{vlabel}/{task}/n={n}/seed={seed}", "kind": "accuracy", "variant": variant,
        "variant_label": vlabel, "variant_options": options, "task": task, "task_label": task, "task_options": {},
        "seq_len": n, "seed": seed, "status": status, "message": message, "seconds": 1.5, "result": result,
    }


def eff(variant: str, n: int, fwd_s: float = 1e-3, fwd_bwd_s: float = 3e-3, mem: float = 2**20, *,
        status: str = "ok", options: dict | None = None, message: str = "", runs: int = 10,
        reference: dict | None = None) -> dict:
    """An efficiency record shaped as the runner writes it (`reference`: {"reference_rel_err": …})."""
    options = options or {}
    vlabel = _label(variant, options)
    result = None
    if status == "ok":
        result = {
            "device": "cpu", "dtype": "torch.float32", "threads": 2, "mem_method": "tensor-bytes",
            "fwd": {"median_s": fwd_s, "iqr_s": fwd_s / 20, "runs": runs},
            "fwd_bwd": {"median_s": fwd_bwd_s, "iqr_s": fwd_bwd_s / 20, "runs": runs},
            "peak_bytes_fwd": mem / 2, "peak_bytes_fwd_bwd": mem,
            "flops_fwd": 1e8, "flops_fwd_bwd": 3e8, "flops_per_s_fwd": 1e8 / fwd_s,
            "flops_per_s_fwd_bwd": 3e8 / fwd_bwd_s, "peak_fraction_fwd": 0.5, "peak_fraction_fwd_bwd": 0.25,
            **(reference or {}),
        }
    return {
        "key": f"efficiency/{vlabel}/-/n={n}/seed=0", "kind": "efficiency", "variant": variant,
        "variant_label": vlabel, "variant_options": options, "task": None, "task_label": "-", "task_options": {},
        "seq_len": n, "seed": 0, "status": status, "message": message, "seconds": 2.0, "result": result,
    }


LOCAL = {"window": 4}


# -- accuracy -------------------------------------------------------------------------------


def accuracy_records() -> list[dict]:
    return [
        acc("multi-head", "task-a", 0.8, seed=0),
        acc("multi-head", "task-a", 0.9, seed=1),
        acc("local", "task-a", 0.5, seed=0, options=LOCAL),
        acc("local", "task-a", 0.7, seed=1, options=LOCAL),
        acc("multi-head", "task-b", 0.3, seed=0, chance=0.1),
        acc("multi-head", "task-b", 0.3, seed=1, chance=0.1),
        acc("local", "task-b", seed=0, status="unsupported", options=LOCAL, message="no cross"),
        acc("local", "task-b", seed=1, status="unsupported", options=LOCAL, message="no cross"),
        acc("multi-head", "char-lm", 3.0, metric="bits_per_byte", chance=0.2, baseline=4.38),
        acc("multi-head", "char-lm", 3.2, seed=1, metric="bits_per_byte", chance=0.2, baseline=4.38),
        acc("local", "char-lm", 2.5, metric="bits_per_byte", chance=0.2, baseline=4.38, options=LOCAL),
        acc("local", "char-lm", 2.5, seed=1, metric="bits_per_byte", chance=0.2, baseline=4.38, options=LOCAL),
    ]


def test_accuracy_table_mean_std_bold_best_chance_row_and_status_cells():
    table = accuracy_table(accuracy_frame(accuracy_records()))
    assert list(table.index) == ["multi-head", "local(window=4)", "chance"]
    assert table.loc["multi-head", "task-a"] == f"**0.850 ± {math.sqrt(0.005):.3f}**"
    assert table.loc["local(window=4)", "task-a"] == f"0.600 ± {math.sqrt(0.02):.3f}"
    assert table.loc["local(window=4)", "task-b"] == "unsupported"  # shown, never dropped
    assert table.loc["multi-head", "task-b"] == "**0.300 ± 0.000**"
    assert table.loc["chance", "task-a"] == "0.500" and table.loc["chance", "task-b"] == "0.100"


def test_a_bucket_is_judged_against_the_trivial_baseline_where_it_is_above_chance():
    """distance's mode of the bound values scores 0.41 at every distance (chance 0.125): a model at
    0.40 far out had been given that far an above-chance reach."""
    buckets = {2: (0.95, 300), 4: (0.90, 300), 8: (0.40, 300), 16: (0.40, 300)}
    plain = acc("multi-head", "distance", 0.6, by_distance=buckets, chance=0.125)
    floored = acc("multi-head", "distance", 0.6, by_distance=buckets, chance=0.125,
                  baselines={"majority": 0.14, "most frequent bound value": 0.41})
    reach = {name: long_range_frame([r], grid()).iloc[0].above_chance_reach for name, r in (("plain", plain),
                                                                                             ("floored", floored))}
    assert reach == {"plain": 16, "floored": 4}


def test_the_bucket_floor_is_the_trivial_baseline_row_over_every_seed_not_the_first_records():
    """Seeds draw their own data, so their baselines differ: the floor was the first record's (seed 1's
    0.30 here, under which 0.40 far out counted as reach), while the trivial-baseline row averages the seeds."""
    buckets = {2: (0.95, 300), 4: (0.90, 300), 8: (0.40, 300), 16: (0.40, 300)}
    records = [acc("multi-head", "distance", 0.6, seed=seed, by_distance=buckets, chance=0.125,
                   baselines={"majority": 0.14, "most frequent bound value": mode})
               for seed, mode in ((1, 0.30), (0, 0.52))]
    floor = distance_frame(records).chance.unique()
    assert floor == pytest.approx([0.41])  # (0.30 + 0.52) / 2, as the trivial-baseline row reads it
    trivial = accuracy_table(accuracy_frame(records)).loc["trivial baseline"].iloc[0]
    assert trivial == "0.410 (most frequent bound value)"
    assert long_range_frame(records, grid()).iloc[0].above_chance_reach == 4


def test_the_efficiency_notes_name_cells_timed_without_a_reference_to_compare_with(tmp_path: Path):
    records = [eff("multi-head", 256, reference={"reference_rel_err": 2e-7}),
               eff("mine", 256, reference={"reference_rel_err": None}),
               eff("older", 256)]  # recorded before the field: says nothing either way
    text = render_markdown(load_run(write_run(tmp_path / "run", records)))
    assert ("Not compared with a naive reference (the variant has none: no `reference_forward`, or no "
            "`reference_core` of its own), so timed unverified: mine n=256.") in text


def test_the_trivial_baseline_row_shows_each_columns_best_named_and_averaged_over_seeds(tmp_path: Path):
    records = accuracy_records()
    # each seed's data: seed 0's best is first noun, seed 1's nouns' majority; over both, nouns' majority is best
    for i, seed_baselines in ((0, {"majority": 0.55, "first noun": 0.72, "nouns' majority": 0.70}),
                              (2, {"majority": 0.55, "first noun": 0.72, "nouns' majority": 0.70}),  # local's seed 0
                              (1, {"majority": 0.50, "first noun": 0.62, "nouns' majority": 0.68})):
        records[i]["result"]["baselines"] = seed_baselines
    records[4]["result"]["baselines"] = {"majority": float("nan"), "error": "trivial_baselines: …"}  # no score
    table = accuracy_table(accuracy_frame(records))
    assert list(table.index) == ["multi-head", "local(window=4)", "chance", "trivial baseline"]
    # one mean per name over the seeds, whatever the number of variants per seed (before: 0.703 "first noun", the
    # mean of each record's best, named by the commonest)
    assert table.loc["trivial baseline", "task-a"] == "0.690 (nouns' majority)"
    assert table.loc["trivial baseline", "task-b"] == "-"
    assert table.loc["trivial baseline", "Average"] == "-"
    report = render_markdown(load_run(write_run(tmp_path / "new", records)))
    assert "| trivial baseline | 0.690 (nouns' majority) |" in report
    assert "Trivial baseline: the best test score of answering without what the task isolates" in report
    # a run recorded before cells held baselines: no such row, no such note
    assert "trivial baseline" not in accuracy_table(accuracy_frame(accuracy_records())).index
    assert "Trivial baseline" not in render_markdown(load_run(write_run(tmp_path / "old", accuracy_records())))


def test_average_excludes_bits_per_byte_which_has_its_own_column_with_the_unigram_baseline():
    frame = accuracy_frame(accuracy_records())
    table = accuracy_table(frame)
    columns = list(table.columns)
    bpb = "char-lm (bits per byte ↓)"
    assert columns == ["task-a", "task-b", "Average", bpb]
    # multi-head: (0.85 + 0.30) / 2; bits per byte (3.1) is not averaged in
    assert table.loc["multi-head", "Average"] == "**0.575**"
    # local has one of two tasks: its average is flagged and never bold
    assert table.loc["local(window=4)", "Average"] == "0.600 (1/2 tasks)"
    # lower is better: local's 2.5 is the best
    assert table.loc["local(window=4)", bpb] == "**2.500 ± 0.000**"
    assert table.loc["multi-head", bpb] == f"3.100 ± {math.sqrt(0.02):.3f}"
    assert table.loc["chance", bpb] == "4.380 (unigram)"
    assert table.loc["chance", "Average"] == "0.300"  # mean of the averaged columns' chance
    average = frame[frame.column == "Average"].set_index("variant")
    assert average.loc["multi-head", "mean"] == pytest.approx(0.575)


def test_single_seed_has_no_std_and_partial_seeds_are_flagged_and_never_bold():
    records = [
        acc("multi-head", "task-a", 0.8, seed=0),
        acc("multi-head", "task-a", seed=1, status="timeout"),
        acc("local", "task-a", 0.5, seed=0, options=LOCAL),
        acc("local", "task-a", 0.6, seed=1, options=LOCAL),
    ]
    table = accuracy_table(accuracy_frame(records))
    # the higher mean is over one seed of two: flagged, not bold; the complete cell is the best
    assert table.loc["multi-head", "task-a"] == "0.800 (1/2 seeds; timeout)"
    assert table.loc["local(window=4)", "task-a"] == f"**0.550 ± {math.sqrt(0.005):.3f}**"
    # its average leaves the incomplete column out, and says so
    assert table.loc["multi-head", "Average"] == "-"
    assert table.loc["local(window=4)", "Average"] == "**0.550**"


def test_a_seed_of_the_grid_not_recorded_yet_counts_as_missing():
    """A run killed (or still running) before seed 1: the cell is a mean over one seed of two."""
    records = [acc("multi-head", "task-a", 0.8, seed=0), acc("multi-head", "task-b", 0.4, seed=0),
               acc("multi-head", "task-b", 0.6, seed=1)]
    frame = accuracy_frame(records, seeds=[0, 1])
    table = accuracy_table(frame)
    assert table.loc["multi-head", "task-a"] == "0.800 (1/2 seeds; not run)"
    assert table.loc["multi-head", "Average"] == "0.500 (1/2 tasks)"
    assert accuracy_table(accuracy_frame(records)).loc["multi-head", "task-a"] == "**0.800**"  # no grid: as recorded
    # a run killed before local reached task-b: its cell says so, where it was left blank
    records.append(acc("local", "task-a", 0.7, seed=0, options=LOCAL))
    table = accuracy_table(accuracy_frame(records, seeds=[0, 1]))
    assert table.loc["local(window=4)", "task-b"] == "not run"
    assert table.loc["local(window=4)", "Average"] == "-"  # no task complete


def test_a_task_at_several_lengths_gets_a_column_per_length():
    records = [acc("multi-head", "task-a", 0.8, n=32), acc("multi-head", "task-a", 0.6, n=64)]
    table = accuracy_table(accuracy_frame(records))
    assert ["task-a (n=32)", "task-a (n=64)", "Average"] == list(table.columns)
    assert table.loc["multi-head", "Average"] == "**0.700**"


# -- long range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accuracies, expected",
    [
        ({1: 1.0, 2: 0.95, 4: 0.5}, (2, False)),
        ({1: 1.0, 2: 0.99, 4: 0.95, 8: 0.91}, (8, True)),  # never dropped: ">= 8"
        ({1: 1.0, 2: 0.5, 4: 1.0}, (1, False)),  # a recovery after a drop does not count
        ({2: 0.8, 4: 0.72, 8: 0.7}, (4, False)),  # 0.72 = 90 % of 0.8 holds; 0.7 does not
        ({}, (None, False)),
    ],
)
def test_effective_range(accuracies, expected):
    assert effective_range(accuracies) == expected


def test_long_range_pools_seeds_by_count_and_shows_ranges_and_window_reach():
    records = [
        acc("multi-head", "distance", 0.8, chance=0.125, by_distance={1: (1.0, 10), 2: (0.95, 100), 4: (0.9, 100)}),
        acc("multi-head", "distance", 0.8, seed=1, chance=0.125,
            by_distance={1: (0.5, 30), 2: (0.95, 100), 4: (0.9, 100)}),
        acc("local", "distance", 0.5, chance=0.125, options=LOCAL,
            by_distance={1: (1.0, 100), 2: (0.95, 100), 4: (0.5, 100), 8: (0.12, 100)}),
        acc("multi-head", "no-distances", 0.9),
    ]
    dist = distance_frame(records)
    pooled = dist[(dist.variant == "multi-head") & (dist.bucket == 1)].iloc[0]
    assert pooled.accuracy == pytest.approx((1.0 * 10 + 0.5 * 30) / 40) and pooled["count"] == 40
    ranges = long_range_frame(records, grid()).set_index("variant")
    assert set(long_range_frame(records, grid()).task) == {"distance"}
    assert ranges.loc["multi-head", "effective_range"] == 4 and ranges.loc["multi-head", "never_dropped"]
    assert ranges.loc["local(window=4)", "effective_range"] == 2
    assert not ranges.loc["local(window=4)", "never_dropped"]
    assert ranges.loc["local(window=4)", "above_chance_reach"] == 4  # 0.12 at d=8 is chance
    assert ranges.loc["local(window=4)", "window_reach"] == 6  # (4 − 1) back a layer, 2 layers
    assert ranges.loc["multi-head", "window_reach"] is None
    table = long_range_table(records, grid()).set_index("variant")
    assert table.loc["multi-head", "effective range"] == "≥ 4"
    assert table.loc["local(window=4)", "effective range"] == "2"
    assert table.loc["local(window=4)", "window reach"] == "(4 − 1) × 2 = 6"
    assert table.loc["local(window=4)", "[4,8)"] == "0.50"


def test_window_reach_reads_a_window_left_at_its_default():
    """`local(kernel=eager)` ran with window 128 and showed no reach: only given options were read."""
    records = [acc("local", "distance", 0.5, chance=0.125, options={"kernel": "eager"}, n=512,
                   by_distance={1: (1.0, 100), 256: (0.5, 100)})]
    table = long_range_table(records, grid()).set_index("variant")
    assert table.loc["local(kernel=eager)", "window reach"] == "(128 − 1) × 2 = 254"
    unknown = [{**records[0], "variant": "not-registered-here", "variant_label": "not-registered-here"}]
    assert long_range_table(unknown, grid()).iloc[0]["window reach"] == ""  # nothing to fill in: as given


def test_compare_matches_a_cell_whether_its_defaults_were_written_out_or_not(tmp_path, bench_output):
    """`linear` / `copy` in A and `linear(kernel=eager)` / `copy(reverse=false)` in B ran the same cells,
    which compare listed as one run's each: 'no cell is in both runs', exit 1."""
    a = write_run(tmp_path / "a", [acc("linear", "copy", 0.8), acc("local", "copy", 0.5, options={"window": 4})])
    written = {**acc("linear", "copy", 0.6, options={"kernel": "eager"}), "task_options": {"reverse": False},
               "task_label": "copy(reverse=False)"}
    written["key"] = "accuracy/linear(kernel=eager)/copy(reverse=False)/n=32/seed=0"
    b = write_run(tmp_path / "b", [written, acc("local", "copy", 0.5, options={"window": 8})])
    code, out, _ = bench_output("compare", a, b)
    assert code == 1, out
    assert ("`accuracy/linear/copy/n=32/seed=0 (B: accuracy/linear(kernel=eager)/copy(reverse=False)/n=32/seed=0)`: "
            "accuracy 0.8000 → 0.6000") in out
    assert "Only in A (1)" in out and "Only in B (1)" in out  # window 4 and window 8 are other cells


def test_effective_range_is_undefined_when_the_shortest_bucket_is_at_chance():
    records = [acc("multi-head", "mqar", 0.1, chance=0.25, by_distance={4: (0.25, 200), 8: (0.26, 200)})]
    row = long_range_frame(records, grid()).iloc[0]
    assert row.effective_range is None and row.above_chance_reach is None
    assert long_range_table(records, grid()).iloc[0]["effective range"] == "- (at chance)"


# -- efficiency -----------------------------------------------------------------------------


def efficiency_records() -> list[dict]:
    records = []
    for n in (256, 1024, 4096):
        scale = n / 256
        records.append(eff("multi-head", n, 1e-3 * scale**2, 3e-3 * scale**2, 2**20 * scale**2))
        if n < 4096:
            records.append(eff("linear", n, 2e-3 * scale, 6e-3 * scale, 2**21 * scale))
        else:
            records.append(eff("linear", n, status="oom", message="out of memory"))
    return records


def test_efficiency_ratios_against_multi_head_at_the_same_n():
    frame = efficiency_frame(efficiency_records()).set_index(["variant", "seq_len"])
    lin = frame.loc[("linear", 1024)]
    mha = frame.loc[("multi-head", 1024)]
    assert mha.fwd_ms == pytest.approx(16.0) and mha.fwd_bwd_ms == pytest.approx(48.0)
    assert lin.fwd_ms == pytest.approx(8.0) and lin.peak_mib_fwd_bwd == pytest.approx(8.0)
    assert lin.speedup_fwd == pytest.approx(2.0)  # t_mha / t_variant
    assert lin.speedup_fwd_bwd == pytest.approx(2.0)
    assert lin.memory_ratio == pytest.approx(0.5)  # mem_variant / mem_mha
    assert frame.loc[("linear", 256)].speedup_fwd == pytest.approx(0.5)
    assert mha.speedup_fwd == pytest.approx(1.0) and mha.memory_ratio == pytest.approx(1.0)
    oom = frame.loc[("linear", 4096)]
    assert oom.status == "oom" and math.isnan(oom.speedup_fwd)


def test_scaling_exponent_recovers_the_power_and_needs_two_points():
    assert scaling_exponent([256, 1024, 4096], [n**2 * 1e-9 for n in (256, 1024, 4096)]) == pytest.approx(2.0)
    assert scaling_exponent([256], [1.0]) is None
    assert scaling_exponent([256, 1024], [1.0, math.nan]) is None
    scaling = scaling_frame(efficiency_frame(efficiency_records())).set_index("variant")
    assert scaling.loc["multi-head", "time_exp_fwd_bwd"] == pytest.approx(2.0)
    assert scaling.loc["multi-head", "mem_exp_fwd_bwd"] == pytest.approx(2.0)
    assert scaling.loc["linear", "time_exp_fwd"] == pytest.approx(1.0)  # over the ok lengths only
    assert scaling.loc["linear", "points"] == 2


def test_markdown_report_has_the_environment_header_and_every_section(tmp_path):
    run = write_run(tmp_path / "run", accuracy_records() + efficiency_records())
    text = render_markdown(load_run(run))
    for expected in ("cpu (Test CPU 9000)", "2 threads", "torch 2.13.0+cpu", "123.4 GFLOP/s", "abc1234def",
                     "2026-01-02T03:04:05", "profile**: quick", "2 layers", "lengths 256, 1024, 4096"):
        assert expected in text, expected
    assert "## Accuracy" in text and "## Long-range" in text and "## Efficiency" in text and "### Scaling" in text
    assert "| 4096 | linear | oom |" in text
    assert "`efficiency/linear/-/n=4096/seed=0`: oom — out of memory" in text
    assert "<" not in text.replace("<0.001", "")  # plain markdown, no HTML


def test_a_task_with_no_ok_cell_beside_one_with_is_reported(tmp_path):
    # char-lm unsupported by a variant without a causal form, distance ok: the report crashed (a NaN metric)
    records = [acc("m", "distance", 0.8), acc("m", "char-lm", status="unsupported", message="no causal form")]
    text = render_markdown(load_run(write_run(tmp_path / "run", records)))
    assert "| m | **0.800** | **0.800** | unsupported |" in text, text  # bits per byte: never in the Average
    assert "char-lm (bits per byte ↓)" in text  # as the registered task declares it, with no ok cell to say


def test_timings_of_a_variant_that_failed_its_layer_checks_say_so(tmp_path):
    # before: its efficiency rows read as any other's, with no word of the failed check
    records = [acc("v", "copy", status="error", message="v: its padding check fails at n=32: non-finite output "
                   "(key_padding_mask); not trained (bench check --variants v runs every check)"),
               acc("multi-head", "copy", 0.9), eff("v", 256), eff("multi-head", 256)]
    text = render_markdown(load_run(write_run(tmp_path / "run", records)))
    assert ("Timed, though its accuracy cells failed a layer check and were not trained: v (padding at n=32); its "
            "timings are of a layer that fails it") in text, text
    # a translation cell whose --cross variant failed: that one is named, not the cell's own (sound) variant
    records = [acc("multi-head", "translation", status="error", message="bad: its cross check fails at n=32: …"),
               eff("multi-head", 256), eff("bad", 256)]
    text = render_markdown(load_run(write_run(tmp_path / "cross", records)))
    assert "not trained: bad (cross at n=32);" in text, text


def test_a_fraction_of_the_matmul_peak_above_100_percent_is_explained(tmp_path):
    # the peak is measured once, when the run starts: on a busy machine, cells timed later in a
    # quieter minute read 137-143 % of it, which the table had shown without a word
    quiet = write_run(tmp_path / "quiet", efficiency_records())
    assert "Above 100 % of the matmul peak" not in render_markdown(load_run(quiet))
    records = efficiency_records()
    records[0]["result"]["peak_fraction_fwd_bwd"] = 1.432
    text = render_markdown(load_run(write_run(tmp_path / "busy", records)))
    assert "| 256 | multi-head |" in text and "50.0% / 143.2%" in text
    assert ("Above 100 % of the matmul peak (up to 143%): the peak is one square matmul's, timed when the run "
            "started; a larger GEMM may run a little faster than it, and a peak taken while the machine was busier") in text


def test_runs_that_differ_only_in_their_time_budget_compare():
    # --max-cell-seconds now sets the efficiency cells' budget too: a budget decides whether a
    # cell may finish, not what it measures, so `bench compare` must not refuse the pair for it
    a = {"profile": "smoke", "efficiency": {"d_model": 64, "lengths": [64], "max_seconds": None}}
    b = {"profile": "smoke", "efficiency": {"d_model": 64, "lengths": [256], "max_seconds": 600.0}}
    assert incomparable_settings(a, b) == []
    assert incomparable_settings(a, {**b, "efficiency": {**b["efficiency"], "d_model": 128}}) == [
        "efficiency.d_model 64 vs 128"]


def test_a_data_file_edited_between_runs_is_named_with_its_digests():
    """Before: "data./tmp/data.csv 69ed… vs f987…", the path glued to the setting's name."""
    a, b = {"data": {"/tmp/data.csv": "6" * 64}}, {"data": {"/tmp/data.csv": "f" * 64}}
    assert incomparable_settings(a, b) == ["data file /tmp/data.csv: sha256 666666666666… vs ffffffffffff…"]


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "compare"])
def test_help_shows_an_example(command, bench_output):
    code, out, _ = bench_output(command, "--help")
    assert code == 0 and "Example" in out and f"bench {command} " in out


def test_bench_report_markdown_to_stdout_and_to_a_file(tmp_path, bench_output):
    run = write_run(tmp_path / "run", accuracy_records() + efficiency_records())
    code, out, _ = bench_output("report", run)
    assert code == 0 and out.startswith("# attnbench report: run") and "| **0.575** |" in out
    code, out, _ = bench_output("report", run, "--out", tmp_path / "out" / "report.md")
    assert code == 0 and (tmp_path / "out" / "report.md").read_text().startswith("# attnbench report")


def test_bench_report_csv_writes_one_file_per_table(tmp_path, bench_output):
    run = write_run(tmp_path / "run", accuracy_records() + efficiency_records() + [
        acc("multi-head", "distance", 0.8, chance=0.125, by_distance={1: (1.0, 10), 2: (0.9, 10)})])
    code, out, _ = bench_output("report", run, "--format", "csv", "--out", tmp_path / "tables" / "quick.csv")
    assert code == 0
    names = ["accuracy", "long_range", "effective_range", "efficiency", "scaling"]
    paths = [tmp_path / "tables" / f"quick_{name}.csv" for name in names]
    assert out.split() == [str(p) for p in paths]
    accuracy = pd.read_csv(paths[0])
    row = accuracy[(accuracy.variant == "multi-head") & (accuracy.column == "task-a")].iloc[0]
    assert row["mean"] == pytest.approx(0.85) and bool(row.best)
    efficiency = pd.read_csv(paths[3])
    assert set(efficiency.status) == {"ok", "oom"}
    assert pd.read_csv(paths[2]).effective_range.tolist() == [2]
    # default: beside the run
    code, out, _ = bench_output("report", run, "--format", "csv")
    assert code == 0 and (run / "report_accuracy.csv").exists()


@pytest.mark.parametrize("damage", [{"seq_len": "x"}, {"result": None}, {"status": "weird"}, {"seq_len": None}])
def test_a_damaged_record_is_skipped_with_a_warning_and_the_rest_reported(tmp_path, damage, bench_output):
    records = accuracy_records() + efficiency_records()
    damaged = [*records[:2], {**records[2], **damage}, *records[3:]]
    a, b = write_run(tmp_path / "a", records), write_run(tmp_path / "b", damaged)
    code, out, err = bench_output("report", b)
    assert code == 0 and "## Efficiency" in out, err
    assert err.startswith("bench: warning: cells.jsonl line 3 is not a valid cell record (") and "Traceback" not in err
    assert "local(window=4)" in out  # its other cells are reported
    code, out, err = bench_output("compare", a, b)
    assert code == 0 and "Only in A (1)" in out and "line 3 is not a valid cell record" in err


def test_report_into_an_existing_folder_writes_inside_it(tmp_path, monkeypatch, bench_output):
    run = write_run(tmp_path / "run", accuracy_records() + efficiency_records())
    monkeypatch.chdir(tmp_path)
    Path("tabs").mkdir()
    code, out, _ = bench_output("report", run, "--format", "csv", "--out", "tabs")
    assert code == 0 and out.split()[0] == "tabs/report_accuracy.csv"
    code, out, _ = bench_output("report", run, "--out", "tabs")
    assert code == 0 and out.strip() == "tabs/report.md"
    code, out, _ = bench_output("report", run, "--format", "csv", "--out", "new/")  # a trailing / names a folder
    assert code == 0 and out.split()[-1] == "new/report_scaling.csv"
    assert sorted(p.name for p in Path("tabs").iterdir()) == ["report.md", *(f"report_{t}.csv" for t in sorted(
        ["accuracy", "long_range", "effective_range", "efficiency", "scaling"]))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "run", "tabs"]  # nothing beside the folder
    _, out, _ = bench_output("report", "--help")
    assert "An existing folder (or a path ending in /) gets the files inside it" in " ".join(out.split())


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_report_refuses_an_empty_out(tmp_path, monkeypatch, fmt, bench_output):
    run = write_run(tmp_path / "run", accuracy_records())
    monkeypatch.chdir(tmp_path)
    code, _, err = bench_output("report", run, "--format", fmt, "--out", "")
    assert code == 2 and one_error_line(err).startswith("bench: error: --out: empty path")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _fill_the_disk(path, *args, **kwargs):
    """A writer that gets part of a file out, then finds the disk full."""
    Path(path).write_bytes(b"# attnbench rep")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(("fmt", "out", "writer"), [
    ("md", "r.md", (Path, "write_text")),
    ("csv", "r_accuracy.csv", (pd.DataFrame, "to_csv")),
])
def test_a_failed_report_write_leaves_the_previous_file(tmp_path, monkeypatch, fmt, out, writer, bench_output):
    run = write_run(tmp_path / "run", accuracy_records())
    folder = tmp_path / "out"
    assert bench_output("report", run, "--format", fmt, "--out", folder / "r.md")[0] == 0
    before = (folder / out).read_bytes()
    monkeypatch.setattr(*writer, lambda self, *args, **kwargs: _fill_the_disk(args[0] if fmt == "csv" else self))
    code, _, err = bench_output("report", run, "--format", fmt, "--out", folder / "r.md")
    assert code == 2
    assert one_error_line(err) == f"bench: error: cannot write {folder / out}: No space left on device"
    assert (folder / out).read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("args", [["report"], ["compare", "RUN"]])
def test_a_directory_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, args, bench_output):
    code, out, err = bench_output(*(tmp_path if a == "RUN" else a for a in args), tmp_path)  # RUN: a directory too
    assert code == 2 and "not an attnbench run" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_compare_identical_runs_exit_0(tmp_path, bench_output):
    records = accuracy_records() + efficiency_records()
    a, b = write_run(tmp_path / "a", records), write_run(tmp_path / "b", records)
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and "No regressions beyond rtol 0.05" in out and "1.00×" in out


def test_compare_an_accuracy_drop_beyond_rtol_exits_1_naming_the_cell(tmp_path, bench_output):
    a = write_run(tmp_path / "a", [acc("multi-head", "task-a", 0.8), acc("linear", "task-a", 0.8)])
    b = write_run(tmp_path / "b", [acc("multi-head", "task-a", 0.72), acc("linear", "task-a", 0.78)])
    code, out, _ = bench_output("compare", a, b, "--rtol", "0.05")
    assert code == 1
    summary = out.split("regression(s)**")[1]
    assert "accuracy/multi-head/task-a/n=32/seed=0" in summary and "-10.0%" in summary
    assert "linear" not in summary  # -2.5 % is within the tolerance


def test_compare_fails_an_ok_cell_of_b_that_lost_a_number_a_has(tmp_path, bench_output):
    """Before: 'not comparable', not a regression, and 'No regressions … in N matched cells'."""
    a = write_run(tmp_path / "a", [acc("multi-head", "task-a", 0.8), acc("linear", "task-a", 0.8)])
    b = write_run(tmp_path / "b", [acc("multi-head", "task-a", None), acc("linear", "task-a", 0.8)])
    code, out, _ = bench_output("compare", a, b)
    assert code == 1
    summary = out.split("regression(s)**")[1]
    assert "accuracy/multi-head/task-a/n=32/seed=0" in summary and "no value in B" in summary, out


def test_compare_bits_per_byte_up_is_a_regression():
    a = load_run_from([acc("multi-head", "char-lm", 3.0, metric="bits_per_byte")])
    b = load_run_from([acc("multi-head", "char-lm", 3.3, metric="bits_per_byte")])
    assert compare_runs(a, b, 0.05).regressions.metric.tolist() == ["bits_per_byte"]
    assert compare_runs(b, a, 0.05).regressions.empty  # down is better


def test_compare_time_within_tolerance_passes_and_beyond_it_fails(tmp_path, bench_output):
    a = write_run(tmp_path / "a", [eff("multi-head", 256, fwd_bwd_s=1e-2)])
    b = write_run(tmp_path / "b", [eff("multi-head", 256, fwd_bwd_s=1.03e-2)])
    c = write_run(tmp_path / "c", [eff("multi-head", 256, fwd_bwd_s=1.10e-2, mem=2**21)])
    assert bench_output("compare", a, b)[0] == 0
    code, out, _ = bench_output("compare", a, c)
    assert code == 1 and "fwd+bwd ms" in out.split("regression(s)")[1] and "peak MiB" in out.split("regression(s)")[1]
    assert bench_output("compare", a, c, "--rtol", "1.5")[0] == 0


def test_compare_counts_a_slower_forward_alone_as_a_regression():
    """The forward is timed and tabulated too: 3× slower there, same fwd+bwd, is a regression."""
    a = load_run_from([eff("linear", 256, fwd_s=1e-3)])
    b = load_run_from([eff("linear", 256, fwd_s=3e-3)])
    assert compare_runs(a, b, 0.05).regressions.metric.tolist() == ["fwd ms"]
    assert compare_runs(b, a, 0.05).regressions.empty


def test_compare_ok_to_error_is_a_regression_and_one_run_cells_are_listed(tmp_path, bench_output):
    a = write_run(tmp_path / "a", [acc("multi-head", "task-a", 0.8), acc("linear", "task-a", 0.8)])
    b = write_run(tmp_path / "b", [acc("multi-head", "task-a", status="error", message="diverged at step 12"),
                                   acc("additive", "task-a", 0.7)])
    code, out, _ = bench_output("compare", a, b)
    assert code == 1
    assert "accuracy/multi-head/task-a/n=32/seed=0`: status ok → error: diverged at step 12" in out
    assert "Only in A (1)" in out and "accuracy/linear/task-a" in out
    assert "Only in B (1)" in out and "accuracy/additive/task-a" in out
    # error → ok is not a regression, and cells in one run only never fail the gate
    assert bench_output("compare", b, a)[0] == 0


def test_compare_marks_a_change_better_only_beyond_rtol_as_it_marks_one_worse():
    """A 1 % faster cell was 'better' while a 4 % slower one had no mark: noise both ways."""
    a = load_run_from([eff("multi-head", 256, fwd_bwd_s=1e-2), eff("linear", 256, fwd_bwd_s=1e-2)])
    b = load_run_from([eff("multi-head", 256, fwd_bwd_s=0.99e-2), eff("linear", 256, fwd_bwd_s=0.9e-2)])
    notes = {(r.key.split("/")[1], r.metric): r.note for r in compare_runs(a, b, 0.05).frame.itertuples()}
    assert notes[("multi-head", "fwd+bwd ms")] == "" and notes[("linear", "fwd+bwd ms")] == "better"
    notes = {(r.key.split("/")[1], r.metric): r.note for r in compare_runs(b, a, 0.05).frame.itertuples()}
    assert notes[("multi-head", "fwd+bwd ms")] == "" and notes[("linear", "fwd+bwd ms")] == "worse"


def test_compare_says_when_the_runs_matmul_peaks_differ(tmp_path, bench_output):
    """Two runs of the same code, B beside another process (its matmul peak 0.31x A's): its times
    read as +3899 % regressions with nothing to say why."""
    records = [eff("multi-head", 256)]
    a = write_run(tmp_path / "a", records, env={**ENV, "matmul_peak_flops": 217.8e9})
    b = write_run(tmp_path / "b", records, env={**ENV, "matmul_peak_flops": 67.2e9})
    near = write_run(tmp_path / "near", records, env={**ENV, "matmul_peak_flops": 200e9})
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and ("the matmul peak each run measured at its start differs: A 217.8, B 67.2 GFLOP/s "
                          "(0.31×)") in out
    code, out, _ = bench_output("compare", a, near)
    assert code == 0 and "matmul peak" not in out


def test_compare_says_a_run_is_incomplete(tmp_path, bench_output):
    """A run killed after some cells passed the gate with nothing to say that its rest was never compared."""
    planned = grid(variants=["multi-head", "linear"], tasks=["task-a"], lengths={"task-a": [32]}, kinds=["accuracy"])
    done = [acc("multi-head", "task-a", 0.8), acc("linear", "task-a", 0.8)]
    a = write_run(tmp_path / "a", done, grid_=planned)
    b = write_run(tmp_path / "b", done[:1], grid_=planned)
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and "No regressions" in out
    assert f"B is incomplete: 1 of its grid's 2 cells are not recorded (`bench run --resume {b}` runs them)" in out
    assert "A is incomplete" not in out


@pytest.mark.parametrize("rtol", ["-1", "nan", "inf"])
def test_compare_rejects_an_rtol_that_is_negative_or_no_number_or_infinite(tmp_path, bench_output, rtol):
    """inf passed every regression: 'No regressions beyond rtol inf', exit 0."""
    a = write_run(tmp_path / "a", [])
    code, _, err = bench_output("compare", a, a, "--rtol", rtol)
    assert code == 2 and f"--rtol must be a finite number >= 0, got {float(rtol)}" in one_error_line(err)


def load_run_from(records: list[dict]):
    import tempfile

    return load_run(write_run(Path(tempfile.mkdtemp()) / "run", records))


# -- realistic data ---------------------------------------------------------------------------


def realistic_records() -> list[dict]:
    """A quick-profile-like run: 5 variants, accuracy + distances + bits per byte, one unsupported,
    efficiency at three lengths with one timeout (numbers shaped like a real 2-core CPU run)."""
    variants = [("additive", {}), ("dot-product", {}), ("linear", {}), ("local", LOCAL), ("multi-head", {})]
    scores = {"additive": 0.53, "dot-product": 0.50, "linear": 0.49, "local": 0.45, "multi-head": 0.52}
    records = []
    for name, options in variants:
        s = scores[name]
        far = 0.11 if name == "local" else 0.35
        records += [
            acc(name, "agreement", s + 0.45, options=options,
                by_distance={1: (1.0, 135), 4: (0.99 if name != "local" else 0.84, 87),
                             8: (0.99 if name != "local" else 0.61, 170)}),
            acc(name, "distance", s, chance=0.125, options=options,
                by_distance={2: (0.9, 114), 4: (0.7, 135), 8: (far, 123), 16: (far - 0.1, 140)}),
            acc(name, "char-lm", 3.3 - s / 2, metric="bits_per_byte", chance=0.165, baseline=4.38, options=options),
            acc(name, "translation", s + 0.4, metric="exact_match", chance=1.2e-5, options=options)
            if name != "local" else acc(name, "translation", status="unsupported", options=options,
                                        message="local does not support cross-attention, which seq2seq needs"),
        ]
    for n in (256, 1024, 4096):
        r = n / 256
        for name, options in variants:
            if name == "additive" and n == 4096:
                records.append(eff(name, n, status="timeout", message="over the 30 s cell budget"))
                continue
            power = 1 if name in ("linear", "local") else 2
            records.append(eff(name, n, 4e-4 * r**power, 1.6e-3 * r**power, 1.2 * 2**20 * r**power,
                               options=options, runs=1 if n == 4096 else 10))
    return records


def check_realistic_report(text: str) -> None:
    assert "## Accuracy" in text and "## Long-range dependencies" in text and "## Efficiency" in text
    assert "unsupported" in text and "timeout" in text
    assert "bits per byte ↓" in text and "(unigram)" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| local(window=4) |")}
    assert lines, "the local variant has an accuracy row"
    assert "(4 − 1) × 2 = 6" in text  # the window's reach beside local's ranges


def test_report_on_a_realistic_hand_made_run(tmp_path, bench_output):
    run = write_run(tmp_path / "run", realistic_records(), grid_=grid(
        variants=["additive", "dot-product", "linear", "local(window=4)", "multi-head"],
        tasks=["agreement", "char-lm", "distance", "translation"]))
    code, out, err = bench_output("report", run)
    assert code == 0, err
    check_realistic_report(out)
    assert "| 4096 | additive | timeout |" in out
    assert ("± n/a: timed in a single block, so no spread to show: dot-product n=4096 (fwd, fwd+bwd), linear n=4096 "
            "(fwd, fwd+bwd), local(window=4) n=4096 (fwd, fwd+bwd), multi-head n=4096 (fwd, fwd+bwd) (") in out
    # one block: no IQR of 0 shown as if measured, nor written to the CSV or drawn as a bar
    one_block = efficiency_frame(load_run(run).records).query("seq_len == 4096 and variant == 'multi-head'").iloc[0]
    assert one_block.runs_fwd_bwd == 1 and math.isnan(one_block.fwd_bwd_iqr_ms)
    assert re.search(r"\| 4096 \| multi-head \| [0-9.]+ ± n/a \| [0-9.]+× \| [0-9.]+ ± n/a \|", out), out
    assert "0.490 (3/4 tasks)" not in out  # local's average is over 2 of 3 averaged tasks
    assert "(2/3 tasks)" in out
    scaling = scaling_frame(efficiency_frame(load_run(run).records)).set_index("variant")
    assert scaling.loc["multi-head", "time_exp_fwd_bwd"] == pytest.approx(2.0)
    assert scaling.loc["local(window=4)", "mem_exp_fwd_bwd"] == pytest.approx(1.0)
    ranges = long_range_frame(load_run(run).records, load_run(run).grid)
    local = ranges[(ranges.variant == "local(window=4)") & (ranges.task == "distance")].iloc[0]
    assert local.above_chance_reach == 4 and local.window_reach == 6


def test_report_on_the_sample_quick_run(tmp_path, bench_output):
    if not (SAMPLE / "cells.jsonl").exists():
        pytest.skip(f"{SAMPLE} is not on this machine (a real quick-profile run)")
    run = shutil.copytree(SAMPLE, tmp_path / "sample-quick")
    code, out, err = bench_output("report", run)
    assert code == 0, err
    check_realistic_report(out)
    assert bench_output("compare", run, run)[0] == 0


def test_window_reach_is_window_minus_one_per_layer_and_none_without_a_window_or_layers():
    assert [window_reach(w, 2) for w in (1, 4, 16)] == [0, 6, 30]
    assert window_reach(None, 2) is None and window_reach(4, None) is None and window_reach(4, 0) is None


@pytest.mark.parametrize("name", ["grid.json", "cells.jsonl"])
def test_a_run_s_own_file_given_for_its_directory_says_so(tmp_path, bench_output, name):
    """`bench report RUN/grid.json` said '… is not an attnbench run (no grid.json)'."""
    run = write_run(tmp_path / "run", [acc("multi-head", "task-a", 0.8)])
    code, _, err = bench_output("report", run / name)
    assert code == 2
    assert one_error_line(err) == f"bench: error: {run / name} is a file of the run {run}: give the run's directory"


def with_digest(record: dict, digest: str) -> dict:
    return {**record, "result": {**record["result"], "data_digest": digest}}


def test_compare_does_not_read_a_change_of_task_data_as_a_regression(tmp_path, bench_output):
    """Before: runs on either side of a task's new generator or split (agreement at 90faef9) were
    compared score for score, so the new data read as a regression of every variant."""
    a = write_run(tmp_path / "a", [with_digest(acc("multi-head", "task-a", 0.9), "aaaa"),
                                   with_digest(acc("linear", "task-a", 0.8), "aaaa"), acc("dot-product", "task-a", 0.8)])
    b = write_run(tmp_path / "b", [with_digest(acc("multi-head", "task-a", 0.6), "bbbb"),
                                   with_digest(acc("linear", "task-a", 0.7), "aaaa"), acc("dot-product", "task-a", 0.7)])
    code, out, _ = bench_output("compare", a, b)
    assert code == 1  # linear's drop on the same data, and dot-product's (no digest recorded: compared as before)
    summary = out.split("regression(s)**")[1]
    assert "linear" in summary and "dot-product" in summary and "multi-head" not in summary
    assert "other task data (sha256 aaaa vs bbbb): not compared" in out
    assert "1 matched cell(s) trained and were scored on other task data" in out
    only = write_run(tmp_path / "only", [with_digest(acc("multi-head", "task-a", 0.9), "cccc")])
    code, out, err = bench_output("compare", a, only)
    assert code == 1 and "bench compare: nothing compared: every cell in both runs (1) trained on other task data" in err


def test_a_cell_records_the_digest_of_its_data_and_it_follows_the_data(monkeypatch):
    from attnbench.runner import train as train_module
    from attnbench.tasks import build_task

    task = build_task("copy")
    data = {split: train_module.task_data(task, split, 8, 32, 0) for split in ("train", "valid", "test")}
    digest = train_module.data_digest(data)
    assert len(digest) == 16 and digest == train_module.data_digest(dict(data))
    other = {**data, "test": train_module.task_data(task, "test", 8, 32, 1)}
    assert train_module.data_digest(other) != digest
    flipped = data["train"].target.clone()
    flipped[0] += 1
    assert train_module.data_digest({**data, "train": dataclasses.replace(data["train"], target=flipped)}) != digest


def test_the_report_and_compare_name_installed_plugins_and_their_change(tmp_path, bench_output):
    good = {"distribution": "attn-mixed", "version": "0.1", "module": "attn_good", "sha256": "a" * 64, "error": None}
    broken = {**good, "module": "attn_x", "sha256": None, "error": "ModuleNotFoundError: x"}
    newer = {**good, "sha256": "b" * 64, "version": "0.2"}
    records = [acc("multi-head", "task-a", 0.8)]
    a = write_run(tmp_path / "a", records, env={**ENV, "installed_plugins": {"variant:good (attn-mixed)": good,
                                                                             "variant:exploding (attn-mixed)": broken}})
    b = write_run(tmp_path / "b", records, env={**ENV, "installed_plugins": {"variant:good (attn-mixed)": newer}})
    code, out, _ = bench_output("report", a)
    assert code == 0 and ("- **installed plugins**: `variant:good (attn-mixed)` (version 0.1, sha256 aaaaaaaaaaaa…); "
                          "`variant:exploding (attn-mixed)` (version 0.1, failed to load)") in out
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and ("- **note**: the runs' plugins differ (variant:exploding (attn-mixed): version 0.1, failed "
                          "to load in A, absent in B; variant:good (attn-mixed): version 0.1, sha256 aaaaaaaaaaaa… in "
                          "A, version 0.2, sha256 bbbbbbbbbbbb… in B)") in out
    old = write_run(tmp_path / "old", records)  # a run from before they were recorded: unknown, not different
    assert "plugins differ" not in bench_output("compare", old, b)[1]
    assert "plugins differ" not in bench_output("compare", b, b)[1]
    # a run resumed on 0.2 ran both: the same as B's 0.2 alone it is not, nor as A's 0.1 alone
    resumed = {**ENV, "installed_plugins": {"variant:good (attn-mixed)": good},
               "resumes": [{"installed_plugins": {"variant:good (attn-mixed)": newer}, "recorded_before": 1}]}
    both = write_run(tmp_path / "both", records, env=resumed)
    out = bench_output("compare", both, b)[1]
    assert ("variant:good (attn-mixed): version 0.1, sha256 aaaaaaaaaaaa… then version 0.2, sha256 bbbbbbbbbbbb… in "
            "A, version 0.2, sha256 bbbbbbbbbbbb… in B") in out


def test_compare_reads_plugin_sources_by_content_and_an_unrecorded_run_as_unknown(tmp_path, bench_output):
    """Before: one file copied to two paths read as two plugins that differ, and a run that
    recorded no digests as one whose plugin was absent."""
    records = [acc("multi-head", "task-a", 0.8)]
    here = write_run(tmp_path / "here", records, env={**ENV, "plugins": {"/a/my.py": "c" * 64}})
    there = write_run(tmp_path / "there", records, env={**ENV, "plugins": {"/b/my.py": "c" * 64}})
    edited = write_run(tmp_path / "edited", records, env={**ENV, "plugins": {"/a/my.py": "d" * 64}})
    old = write_run(tmp_path / "old", records)  # no digests recorded
    assert "plugins differ" not in bench_output("compare", here, there)[1]
    assert "plugins differ" not in bench_output("compare", old, here)[1]
    out = bench_output("compare", here, edited)[1]
    assert ("the runs' plugins differ (--plugin sources: /a/my.py (sha256 cccccccccccc…) in A, /a/my.py "
            "(sha256 dddddddddddd…) in B)") in out


@pytest.mark.parametrize("field, value, says", [
    ("seeds", 5, "seeds is a number, not a list"),
    ("size", "x", "size is a string, not an object"),
    ("tasks", 3, "tasks is a number, not a list"),
    ("lengths", {"task-a": 32}, "lengths['task-a'] is a number, not a list"),
    ("efficiency", {"lengths": 7}, "efficiency['lengths'] is a number, not a list"),
    ("dtype", 16, "dtype is a number, not a string"),  # plot joined it into its caption: a TypeError
    ("size", {"n_layers": "2"}, "size['n_layers'] is a string, not a number"),  # a window's reach read (4 − 1) × "2"
])
@pytest.mark.parametrize("command", ["report", "plot", "export"])
def test_a_grid_json_field_of_another_type_is_one_line_not_a_traceback(tmp_path, bench_output, field, value, says,
                                                                         command):
    """An edited grid.json: the report's header iterated `seeds`, called `size.get`, and so on."""
    run = write_run(tmp_path / "run", accuracy_records(), grid_={**grid(), field: value})
    code, out, err = bench_output(command, run, *(["--out", tmp_path / "plots"] if command == "plot" else []))
    assert code == 2 and "Traceback" not in out + err
    assert f"grid.json: {says} (bench run writes it so; was the file edited?)" in err


def test_one_thread_is_singular_in_the_report_and_compare(tmp_path, bench_output):
    one = write_run(tmp_path / "one", efficiency_records(), env={**ENV, "threads": 1})
    assert "cpu (Test CPU 9000), 1 thread, dtype" in render_markdown(load_run(one))
    code, out, _ = bench_output("compare", one, write_run(tmp_path / "two", efficiency_records()))
    assert "1 thread, torch" in out and "2 threads, torch" in out, out


def test_a_grid_variant_with_no_accuracy_record_yet_is_a_row_of_not_run(tmp_path):
    """A run killed before its last variant's first accuracy cell: the table had no row for it at
    all, while its header counted the cells not run."""
    records = [acc("multi-head", "task-a", 0.8), acc("local", "task-a", 0.6, options={"window": 4}),
               eff("linear", 256)]  # linear timed, never trained
    run = write_run(tmp_path / "run", records, grid_=grid(variants=["multi-head", "linear", "local(window=4)"]))
    text = render_markdown(load_run(run))
    assert "| linear | not run | - |" in text, text
    assert "| multi-head | **0.800** | **0.800** |" in text  # the other rows as before
    rows = [line.split(" | ")[0] for line in text.split("## Accuracy")[1].splitlines() if line.startswith("| ")]
    assert rows[1:4] == ["| multi-head", "| linear", "| local(window=4)"]  # the grid's order
    from attnbench.runner.plots import plot_run

    assert plot_run(run, tmp_path / "plots")  # each row's options looked up: a KeyError before
    killed = write_run(tmp_path / "killed", records[:1],
                       grid_=grid(variants=["multi-head", "local(window=4, kernel=eager)"]))
    assert "| local(window=4, kernel=eager) | not run | - |" in render_markdown(load_run(killed))
    assert plot_run(killed, tmp_path / "killed-plots")
    efficiency_only = write_run(tmp_path / "efficiency-only", records,
                                grid_=grid(variants=["multi-head", "local(window=4)", "linear"], kinds=["efficiency"]))
    assert "| linear |" not in render_markdown(load_run(efficiency_only)).split("## Efficiency")[0]
