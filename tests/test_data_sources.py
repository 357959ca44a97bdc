"""Reading users' data files (`tasks/files.py`): every format, and one clear line for each bad file."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support import one_error_line

from attnbench.tasks import SPLITS, build_task
from attnbench.tasks.files import DataFileError, is_folder, read_table

TOO_LONG = "a" * 300  # one path component over the 255 bytes that Linux and macOS allow


def _rows(n=60):
    return [{"text": f"review {i} is " + ("warm" if i % 2 else "cold"), "label": "pos" if i % 2 else "neg"}
            for i in range(n)]


# ---------------------------------------------------------------------------- paths the system refuses
def test_a_file_name_too_long_is_one_line_and_exit_2(tmp_path, bench_output):
    # before: Path.exists() raised OSError(ENAMETOOLONG) on Python 3.11: "building the task failed: OSError"
    path = tmp_path / f"{TOO_LONG}.csv"
    with pytest.raises(DataFileError, match="File name too long"):
        build_task("text-cls", source=str(path))
    code, out, err = bench_output("show-task", f"text-cls(source={path})")
    assert code == 2 and out == ""
    assert one_error_line(err).startswith("bench: error: text-cls: ") and err.rstrip().endswith(": File name too long")


@pytest.mark.parametrize("name", [f"{TOO_LONG}.tsv", TOO_LONG])
def test_a_listops_path_too_long_is_one_line_in_show_task_and_run(tmp_path, bench_output, name):
    path = tmp_path / name
    for argv in (("show-task", f"listops(path={path})"),
                 ("run", "--profile", "smoke", "--variants", "multi-head", "--tasks", f"listops(path={path})", "--dry-run")):
        code, out, err = bench_output(*argv)
        assert code == 2 and out == ""
        assert one_error_line(err).startswith("bench: error: listops: ") and err.rstrip().endswith("File name too long")


def test_read_table_and_is_folder_refuse_a_name_too_long(tmp_path):
    with pytest.raises(DataFileError, match=r"^listops: .*: File name too long$"):
        read_table(tmp_path / f"{TOO_LONG}.tsv", ("Source", "Target"), "listops", fmt="tsv")
    with pytest.raises(DataFileError, match="File name too long"):
        is_folder(tmp_path / TOO_LONG, "listops")
    assert is_folder(tmp_path, "listops") and not is_folder(tmp_path / "absent", "listops")


# ---------------------------------------------------------------------------- JSON
def test_a_json_array_of_objects_is_read_as_a_table(tmp_path):
    # before: read as JSON Lines, so "lacks column(s) text, label; it has 0, 1, 2, ..."
    array = tmp_path / "reviews.json"
    array.write_text(json.dumps(_rows(), indent=2))
    lines = tmp_path / "reviews.jsonl"
    pd.DataFrame(_rows()).to_json(lines, orient="records", lines=True)
    read = build_task("text-cls", source=str(array))
    same = build_task("text-cls", source=str(lines))
    assert read.classes == same.classes == ("neg", "pos")
    assert [read.size(s) for s in SPLITS] == [same.size(s) for s in SPLITS]
    assert read.build("train", 8, 32, 0).tokens.equal(same.build("train", 8, 32, 0).tokens)


def test_a_json_file_of_json_lines_still_reads(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows()))
    assert sum(build_task("text-cls", source=str(path), balance=False).size(s) for s in SPLITS) == 60


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("one.json", json.dumps({"text": ["a", "b"], "label": [0, 1]}, indent=2),
         "holds one JSON object of columns"),
        # on one line, as pandas writes it: before, read as one row ("1 of 1 rows has no text")
        ("columns.json", pd.DataFrame(_rows()).to_json(), r"holds one JSON object of columns \(pandas' to_json "
         r"default\); expected an array of row objects \(\[\{...\}, \{...\}\]; to_json\(PATH, orient='records'\)\)"),
        ("row.json", json.dumps(_rows(1)[0]), "holds one JSON object; expected an array"),
        ("mixed.json", json.dumps([{"text": "a", "label": 0}, 5]), "item 2 of its JSON array is a int, not an object"),
        ("empty.json", "[]", "holds an empty JSON array"),
        ("cut.json", '[{"text": "a", "label": 0},', r"is not valid JSON: Expecting value \(line 1\)"),
        ("bad.jsonl", "".join(json.dumps(r) + "\n" for r in _rows(5)) + "{oops\n",
         r"line 6 is not valid JSON: Expecting property name enclosed in double quotes \(column 2\)"),
        ("scalar.jsonl", json.dumps(_rows(1)[0]) + "\n7\n", "line 2 is a JSON int, not an object"),
    ],
    ids=["object", "columns", "one-row", "array-of-non-objects", "empty-array", "truncated-array", "bad-line", "scalar-line"],
)
def test_bad_json_is_one_line(tmp_path, name, content, words):
    # before: a bad JSON Lines line was named by its character position ("at position 208")
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=words) as info:
        build_task("text-cls", source=str(path))
    assert str(info.value).startswith(f"text-cls: {path}") and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- formats
def test_an_unknown_suffix_names_the_task(tmp_path, bench_output):
    # before: the only data-file error without the "text-cls:" owner in front
    path = tmp_path / "reviews.txt"
    path.write_text("text,label\na,0\nb,1\n")
    code, _, err = bench_output("show-task", f"text-cls(source={path})")
    assert code == 2
    assert one_error_line(err) == (f"bench: error: text-cls: {path}: cannot tell the format from the suffix "
                                   "'.txt'; use .csv, .tsv, .json, .jsonl or .parquet")
