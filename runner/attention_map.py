"""`bench attention`: train (or load) a small model and draw one example's attention weights.

    request = AttentionRequest(variant="multi-head", task="copy", seq_len=32, ...)
    outcome = attention_figure(request)     # trains, extracts, draws; outcome.path, outcome.record

What is drawn depends on the task's kind:

- classify / tag / lm: the encoder's self-attention of one layer (default the last), queries as
  rows and keys as columns (causal for lm), one head or the mean over heads.
- seq2seq (`translation`): the source–target alignment, i.e. the decoder's cross-attention
  (target × source). Row j is the decoder step that *predicts* target word j (teacher-forced with
  the gold target; greedy-decoded for `--text`). The gold alignment (`meta["alignment"]`) is
  overlaid as boxes, each row's most-attended source word as a dot, and the alignment error rate
  (`alignment_error_rate`: share of aligned rows whose argmax misses the gold word) is given for
  the example and for the whole test split.

Matrices are trimmed to the real (non-pad) tokens. The example is a test-split example, or
`--text`: raw bytes for the byte-level corpus tasks (text-cls, sentiment, char-lm), words for the
word-level tasks whose vocabulary they come from (agreement, translation).

Weights: `--save-weights FILE` writes a checkpoint, `torch.save` of the model's state dict with
the variant, task (options resolved, so `local` and `local(window=128)` are one model) and model
size it was trained as; `--weights FILE` loads one with `torch.load(weights_only=True)` instead of
training, and refuses it for another variant, task or size: shapes alone let a `linear` model load
into `multi-head`. A bare state dict (a file from before the checkpoint recorded these) still
loads, with a warning that nothing but the shapes was checked.
"""

from __future__ import annotations

import os
import re
import textwrap
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window (set before anything imports pyplot)

import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import Tensor  # noqa: E402

from attnbench.errors import AttnbenchError, UnsupportedError  # noqa: E402
from attnbench.limits import MAX_SHOWN  # noqa: E402
from attnbench.options import resolve_options  # noqa: E402
from attnbench.runner.model import BenchModel, ModelSize  # noqa: E402
from attnbench.runner.store import StoreError, refuse_run_file, write_atomically  # noqa: E402
from attnbench.runner.train import TrainSettings, evaluate, greedy_decode, task_data, train_and_evaluate  # noqa: E402
from attnbench.selection import Selected  # noqa: E402
from attnbench.tasks.base import IGNORE_INDEX, Batch, Task, build_task, shift_right  # noqa: E402
from attnbench.tasks.nlp.corpus import BYTE_OFFSET, CorpusTask  # noqa: E402
from attnbench.tasks.nlp.translation import alignment_error_rate  # noqa: E402
from attnbench.variants.base import get_variant_spec  # noqa: E402

__all__ = [
    "AttentionMap",
    "AttentionOutcome",
    "AttentionRequest",
    "attention_figure",
    "check_file_target",
    "check_returns_weights",
    "check_seq_len",
    "checked_weights",
    "default_out",
    "draw_attention",
    "encode_text",
    "extract_attention",
    "fit_weights",
    "load_weights",
    "read_weights",
    "test_alignment_error_rate",
]

WORD_TASKS = ("agreement", "translation")  # word-level vocabularies that --text can be written in
FORMATS = (".png", ".svg", ".pdf")
DPI = 150
CMAP = "rocket_r"  # 0 is white: masked and out-of-window keys read as empty
GOLD = "#1f9bff"
RC = {"svg.fonttype": "none", "axes.titlesize": 10, "axes.labelsize": 10}
SHOWN = {" ": "␣", "\t": "⇥", "\n": "↵"}  # invisible bytes made visible on the axes
CHECKPOINT = "attnbench attention checkpoint 1"  # marks (and versions) a --save-weights file


# -- what is drawn -------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionMap:
    """One example's attention weights trimmed to real tokens, with the labels to draw them."""

    weights: Tensor  # (heads, rows, cols) float32 on CPU
    rows: tuple[str, ...]  # query labels (the predicted target word for cross-attention)
    cols: tuple[str, ...]  # key labels
    kind: str  # "self" or "cross"
    layer: int  # 0-based
    n_layers: int
    gold: tuple[tuple[int, int], ...] = ()  # (row, col) links of the gold alignment
    aer: float | None = None  # alignment error rate of this example (cross with gold only)
    caption: str = ""  # the example's gold / predicted answer in words

    @property
    def heads(self) -> int:
        return int(self.weights.shape[0])

    def matrix(self, head: int | None = None) -> Tensor:
        """(rows, cols): one head (0-based) or, for None, the mean over heads."""
        return self.weights.mean(dim=0) if head is None else self.weights[head]


@dataclass(frozen=True)
class AttentionRequest:
    """Everything `bench attention` was asked for, validated names and options included."""

    variant: str
    task: str
    seq_len: int
    size: ModelSize
    settings: TrainSettings
    out: Path
    variant_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    cross: tuple[str, dict] | None = None
    seed: int = 0
    layer: int | None = None  # 0-based; None = the last
    head: int | None = None  # 0-based; None = mean over heads
    text: str | None = None
    example: int = 0  # index into the test split when there is no text
    weights: Path | None = None
    save_weights: Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class AttentionOutcome:
    """The figure written, the model's test record and the drawn map."""

    path: Path
    record: dict[str, Any]
    amap: AttentionMap
    test_aer: float | None = None
    warnings: tuple[str, ...] = ()  # for the user, one line each (an unchecked old --weights file)


# -- validation at the edge ----------------------------------------------------------------


def drawn_variant(kind: str, variant: str, cross: tuple[str, dict] | None) -> str:
    """The variant whose weights the figure shows: the cross variant for seq2seq."""
    return (cross[0] if cross else variant) if kind == "seq2seq" else variant


def check_returns_weights(name: str) -> None:
    """A one-line error for a variant whose spec says it returns no weights."""
    if not get_variant_spec(name).returns_weights:
        raise AttnbenchError(f"{name} does not return attention weights (returns_weights=False in its spec)")


def default_out(variant_label: str, task_label: str) -> Path:
    """attention-<variant>-<task>.png in the current directory, options kept but made file-safe."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9._=-]+", "-", s).strip("-")  # noqa: E731
    return Path(f"attention-{safe(variant_label)}-{safe(task_label)}.png")


def check_out(out: Path) -> None:
    if out.suffix.lower() not in FORMATS:
        raise AttnbenchError(f"--out: {out} must end in one of {', '.join(FORMATS)}")
    check_file_target("--out", out)


def check_file_target(flag: str, path: Path) -> None:
    """`path` can be written as a file once the work is done: it is no directory, and its nearest
    existing ancestor is a writable directory (the missing ones are made when it is written).
    Checked before training, so that a bad path costs no training run; nothing is made here."""
    if path.is_dir():
        raise AttnbenchError(f"{flag}: {path} is a directory; give a file name")
    try:
        refuse_run_file(path)  # a run's cells.jsonl, grid.json …: writing there would lose the run
    except StoreError as err:
        raise AttnbenchError(f"{flag}: {err}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise AttnbenchError(f"{flag}: cannot write {path}: permission denied")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AttnbenchError(f"{flag}: cannot write {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AttnbenchError(f"{flag}: cannot write {path}: {ancestor} is not writable")


def check_seq_len(task: Task, label: str, seq_len: int) -> None:
    """--seq-len within what the task can be built at (the check `bench run` makes of --lengths)
    and within MAX_SHOWN, what a figure of n × n weights can show. A task without a maximum would
    otherwise take any length, and the model, its weights and their labels the memory with it (100M
    tokens: the OOM killer); checked before any data is generated."""
    task.check_length(seq_len, flag="--seq-len", label=label)
    if seq_len > MAX_SHOWN:
        raise AttnbenchError(f"--seq-len: {seq_len} is more than bench attention draws (at most {MAX_SHOWN} tokens)")


# -- the example ---------------------------------------------------------------------------


def encode_text(task: Task, text: str, seq_len: int) -> Batch:
    """`text` as a one-example batch of `task` (no gold target): bytes or vocabulary words."""
    if isinstance(task, CorpusTask):
        ids = [b + BYTE_OFFSET for b in text.encode("utf-8")]
        unit = "bytes"
    elif task.name in WORD_TASKS:
        vocab = {w: i for i, w in enumerate(task.token_names()) if i != task.pad_id}
        words = text.lower().split()
        unknown = list(dict.fromkeys(w for w in words if w not in vocab))
        if unknown:
            raise AttnbenchError(
                f"--text: {task.name} has no word{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))} in its vocabulary (bench show-task {task.name} shows examples)"
            )
        ids, unit = [vocab[w] for w in words], "words"
    else:
        raise AttnbenchError(
            f"--text is not supported for {task.name}: only byte-level tasks (text-cls, sentiment, char-lm) "
            f"and word-level tasks ({', '.join(WORD_TASKS)}) read text"
        )
    if not ids:
        raise AttnbenchError("--text: the text is empty")
    if len(ids) > seq_len:
        raise AttnbenchError(f"--text: {len(ids)} {unit} do not fit --seq-len {seq_len}; shorten it or raise --seq-len")
    tokens = torch.full((1, seq_len), task.pad_id, dtype=torch.long)
    tokens[0, : len(ids)] = torch.tensor(ids)
    kind = task.spec.kind
    if kind == "classify":
        target = torch.full((1,), IGNORE_INDEX, dtype=torch.long)
    elif kind == "seq2seq":
        width = task.target_len(seq_len) if hasattr(task, "target_len") else seq_len
        target = torch.full((1, width), IGNORE_INDEX, dtype=torch.long)
    else:
        target = torch.full((1, seq_len), IGNORE_INDEX, dtype=torch.long)
    return Batch(tokens, tokens == task.pad_id, target, {})


def test_example(task: Task, seq_len: int, seed: int, n_test: int, index: int) -> Batch:
    """Example `index` of the test split that the model is scored on."""
    test = task_data(task, "test", n_test, seq_len, seed)
    if not 0 <= index < len(test):
        raise AttnbenchError(f"--example: {index} is out of range; the test split has {len(test)} examples")
    return test.select([index])


# -- the weights ---------------------------------------------------------------------------


def checked_weights(
    model: BenchModel, tokens: Tensor, pad: Tensor, decoder_input: Tensor | None = None, *, layer: int = -1
) -> Tensor:
    """`model.attention_weights(...)`, checked to be (b, h, n, m) and finite: else one line
    (AttnbenchError) that names the variant and the shapes, instead of a figure of the wrong keys."""
    weights = model.attention_weights(tokens, pad, decoder_input, layer=layer)
    seq2seq = model.kind == "seq2seq"
    stack = model.decoder if seq2seq else model.encoder
    block = stack.blocks[layer % len(stack.blocks)]
    attn = (block.cross_attn if seq2seq else None) or block.self_attn
    name = getattr(attn, "variant_name", "") or type(attn).__name__
    b, m = tokens.shape
    n = decoder_input.shape[1] if seq2seq else m
    if not isinstance(weights, Tensor) or weights.dim() != 4 or weights.shape[0] != b or weights.shape[2:] != (n, m):
        got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise AttnbenchError(
            f"{name} returned attention weights of shape {got}; want (b, h, n, m) = ({b}, h, {n}, {m})"
        )
    if not bool(torch.isfinite(weights).all()):
        bad = "NaN" if bool(torch.isnan(weights).any()) else "inf"
        raise AttnbenchError(f"{name} returned attention weights with {bad} (shape {tuple(weights.shape)})")
    return weights


def _labels(names: list[str], ids: list[int]) -> tuple[str, ...]:
    return tuple(SHOWN.get(names[i], names[i]) if 0 <= i < len(names) else str(i) for i in ids)


@torch.no_grad()
def extract_attention(model: BenchModel, task: Task, batch: Batch, *, layer: int | None = None) -> AttentionMap:
    """The attention map of the first example of `batch` (self, or cross for seq2seq)."""
    model.eval()
    depth = len((model.decoder if model.kind == "seq2seq" else model.encoder).blocks)
    chosen = depth - 1 if layer is None else layer
    batch = batch.select([0])
    device = next(model.parameters()).device
    tokens, pad = batch.tokens.to(device), batch.padding_mask.to(device)
    real = (~batch.padding_mask[0]).nonzero().flatten()
    names = task.token_names()
    if model.kind == "seq2seq":
        return _cross_map(model, task, batch, tokens, pad, real, names, chosen, depth)
    weights = checked_weights(model, tokens, pad, layer=chosen)[0].float().cpu()
    weights = weights[:, real][:, :, real]
    labels = _labels(names, batch.tokens[0, real].tolist())
    caption = _caption(model, task, batch, tokens, pad)
    return AttentionMap(weights, labels, labels, "self", chosen, depth, caption=caption)


def _cross_map(model, task, batch, tokens, pad, real, names, chosen, depth) -> AttentionMap:
    gold = "alignment" in batch.meta
    local = Batch(tokens, pad, batch.target.to(tokens.device), {})
    target = batch.target.to(tokens.device) if gold else greedy_decode(model, task, local)
    weights = checked_weights(model, tokens, pad, shift_right_of(task, target), layer=chosen)[0].float().cpu()
    target = target[0].cpu()
    if gold:
        rows = (target != IGNORE_INDEX).nonzero().flatten()
    else:  # up to and including the first <eos>
        eos = (target == task.eos_id).nonzero().flatten()
        rows = torch.arange(int(eos[0]) + 1 if len(eos) else len(target))
    target_names = task.target_names() if hasattr(task, "target_names") else names
    amap = AttentionMap(
        weights[:, rows][:, :, real],
        _labels(target_names, target[rows].tolist()),
        _labels(names, batch.tokens[0, real].tolist()),
        "cross",
        chosen,
        depth,
    )
    said = _until_eos(task, greedy_decode(model, task, local)[0].cpu() if gold else target)
    if not gold:
        return replace(amap, caption=f"predicted: {said} (--text: no gold alignment)")
    alignment = batch.meta["alignment"][0][rows]
    position = {int(p): k for k, p in enumerate(real.tolist())}
    links = tuple((r, position[int(a)]) for r, a in enumerate(alignment.tolist()) if a >= 0 and int(a) in position)
    aer = alignment_error_rate(amap.weights.mean(0)[None], alignment[None])
    expected = _until_eos(task, target[target != IGNORE_INDEX])
    caption = f"gold: {expected}; predicted: {'the same' if said == expected else said}"
    return replace(amap, gold=links, aer=aer, caption=caption)


def _until_eos(task: Task, ids: Tensor) -> str:
    """Target ids up to and including the first <eos>, in words."""
    ids = ids.tolist()
    if task.eos_id in ids:
        ids = ids[: ids.index(task.eos_id) + 1]
    names = task.target_names() if hasattr(task, "target_names") else task.token_names()
    return " ".join(names[i] for i in ids if 0 <= i < len(names) and i != task.pad_id)


def shift_right_of(task: Task, target: Tensor) -> Tensor:
    """The teacher-forced decoder input for `target`."""
    return shift_right(target, task.bos_id, task.pad_id)


def _caption(model: BenchModel, task: Task, batch: Batch, tokens: Tensor, pad: Tensor) -> str:
    """The example's answer in words: gold (when known) and predicted, for classify and tag."""
    if task.spec.kind not in ("classify", "tag"):
        return ""
    predicted = model(tokens, pad).argmax(-1).cpu()
    target = batch.target
    labelled = target != IGNORE_INDEX
    if task.spec.kind == "tag":  # class ids need not be token ids: count the hits instead
        if not bool(labelled.any()):
            return ""
        hits = int(((predicted == target) & labelled).sum())
        return f"predicted {hits} of {int(labelled.sum())} labelled positions right"
    as_batch = lambda t: Batch(batch.tokens, batch.padding_mask, t, batch.meta)  # noqa: E731
    said = f"predicted: {task.describe_target(as_batch(predicted), 0)}"
    if bool(labelled.all()):
        return f"gold: {task.describe_target(batch, 0)}   {said}"
    return said


@torch.no_grad()
def test_alignment_error_rate(model: BenchModel, task: Task, test: Batch, *, layer: int | None = None,
                             batch_size: int = 128) -> float:
    """Alignment error rate of the decoder's cross-attention (mean over heads) on a whole split."""
    model.eval()
    device = next(model.parameters()).device
    wrong = scored = 0.0
    for start in range(0, len(test), batch_size):
        part = test.select(slice(start, start + batch_size))
        target = part.target.to(device)
        weights = checked_weights(
            model, part.tokens.to(device), part.padding_mask.to(device), shift_right_of(task, target),
            layer=-1 if layer is None else layer,
        )
        alignment = part.meta["alignment"]
        n = float((alignment >= 0).sum())
        if n:
            wrong += alignment_error_rate(weights.float().cpu(), alignment) * n
            scored += n
    return wrong / scored if scored else float("nan")


# -- saving and loading a model's weights --------------------------------------------------


def checkpoint_identity(r: AttentionRequest, task: Task) -> dict[str, Any]:
    """What a checkpoint's weights were trained as: variant, task (options resolved, defaults
    included) and model size; for seq2seq also the cross-attention variant."""
    identity: dict[str, Any] = {
        "variant": r.variant,
        "variant_options": _resolved(r.variant, r.variant_options),
        "task": task.name,
        "task_options": dict(task.options),
        "size": r.size.to_dict(),
    }
    if task.spec.kind == "seq2seq":
        name, options = r.cross or (r.variant, r.variant_options)
        identity["cross"] = name
        identity["cross_options"] = _resolved(name, options)
    return identity


def _resolved(variant: str, options: dict[str, Any]) -> dict[str, Any]:
    return resolve_options(variant, get_variant_spec(variant).options, options)


def load_weights(model: BenchModel, path: Path, what: str, identity: dict[str, Any] | None = None) -> str | None:
    """Load a `--save-weights` checkpoint (weights_only) into `model`: `read_weights` then
    `fit_weights`. Returns the warning for a bare state dict, else None."""
    state, warning = read_weights(path, what, identity)
    fit_weights(model, state, path, what)
    return warning


def read_weights(path: Path, what: str, identity: dict[str, Any] | None = None) -> tuple[dict[str, Tensor], str | None]:
    """The state dict of a `--save-weights` checkpoint, and a warning for a bare state dict (whose
    variant, task and size are unknown); one line if the file is not one, or was saved for another
    model than `identity` (when given). Needs no model: it runs before any data or training."""
    state = _read_checkpoint(path)
    warning = None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT:
        saved = state.get("identity")
        if identity is not None and saved != identity:
            raise AttnbenchError(f"--weights: {path} does not fit {what}: it was saved for {state.get('what', saved)}")
        state = state.get("state_dict")
    elif isinstance(state, dict) and state:
        warning = (
            f"--weights: {path} records no variant, task or model size (a bare state dict, or a file "
            f"from an older bench attention); only the shapes were checked"
        )
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise AttnbenchError(
            f"--weights: cannot read {path}: not a checkpoint saved by bench attention "
            f"(it holds a {type(state).__name__}{'' if state else ', empty'})"
        )
    return state, warning


def fit_weights(model: BenchModel, state: dict[str, Tensor], path: Path, what: str) -> None:
    """Load `state` into `model`; one line naming the missing, unexpected or reshaped parameters."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of another shape (e.g. {k!r}: file {tuple(state[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise AttnbenchError(f"--weights: {path} does not fit {what}: {'; '.join(parts)} parameters")
    model.load_state_dict(state)


def _read_checkpoint(path: Path) -> Any:
    """`torch.load(path, weights_only=True)`, or one line that says the file is not a checkpoint.

    torch's own message for a file that is not one advises re-running with weights_only=False,
    which would execute whatever the file holds: the wrong advice for a file of unknown origin,
    so only its cause is kept. Its warnings (an unfamiliar serialisation protocol) are not shown either.
    """
    if not path.exists():
        raise AttnbenchError(f"--weights: no such file {path}")
    if path.is_dir():
        raise AttnbenchError(f"--weights: {path} is a directory, not a checkpoint file")
    not_ours = f"--weights: cannot read {path}: not a checkpoint saved by bench attention"
    try:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
            raise AttnbenchError(f"{not_ours} (not a torch.save archive)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise AttnbenchError(f"--weights: cannot read {path}: {err.strerror or err}") from None
    except AttnbenchError:
        raise
    except Exception as err:  # noqa: BLE001  (unpickling errors have many types)
        raise AttnbenchError(f"{not_ours} ({_cause(err)})") from None


def _cause(err: BaseException) -> str:
    """The first line of what went wrong, without torch's weights_only preamble or its advice to
    allow-list the file's classes."""
    for candidate in (err.__cause__, err.__context__, err):
        text = str(candidate).strip() if candidate is not None else ""
        if text and not text.startswith("Weights only load failed"):
            return f"{type(candidate).__name__}: {text.splitlines()[0].split(' Please ')[0]}"
    return type(err).__name__


def save_weights(model: BenchModel, path: Path, identity: dict[str, Any], what: str) -> None:
    """A checkpoint: the state dict with the `identity` it must be loaded as, and `what` in words."""
    checkpoint = {"format": CHECKPOINT, "identity": identity, "what": what, "state_dict": model.state_dict()}
    try:  # atomically: a failed write leaves the file there before, not half a checkpoint
        write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))
    except StoreError as err:
        raise AttnbenchError(f"--save-weights: {err}") from None


# -- the whole command ---------------------------------------------------------------------


def _label(name: str, options: dict) -> str:
    """`name(opt=value, …)` as a selection writes it (a value with a comma, parenthesis or quote
    quoted), so that it pastes back into --variant, --task or --cross."""
    return Selected(name, dict(options)).label


def attention_figure(request: AttentionRequest) -> AttentionOutcome:
    """Train (or load) the model of `request`, extract one example's attention, draw it."""
    r = request
    task = build_task(r.task, **r.task_options)
    check_returns_weights(drawn_variant(task.spec.kind, r.variant, r.cross))
    check_seq_len(task, _label(r.task, r.task_options), r.seq_len)
    check_out(r.out)
    if r.save_weights is not None:
        check_file_target("--save-weights", r.save_weights)
        if r.save_weights.resolve() == r.out.resolve():  # the figure, written second, would replace it
            raise AttnbenchError(f"--save-weights: {r.save_weights} is the --out figure too; give each its own file")
    if r.layer is not None and not 0 <= r.layer < r.size.n_layers:
        raise AttnbenchError(f"--layer: {r.layer + 1} does not exist; the model has layers 1 to {r.size.n_layers}")
    cross = f" with cross-attention {_label(*r.cross)}" if r.cross and task.spec.kind == "seq2seq" else ""
    what = (
        f"{_label(r.variant, r.variant_options)} on {_label(r.task, r.task_options)}{cross} "
        f"(d_model={r.size.d_model}, n_layers={r.size.n_layers}, n_heads={r.size.n_heads})"
    )
    identity = checkpoint_identity(r, task)
    state, warning = read_weights(r.weights, what, identity) if r.weights is not None else (None, None)
    if r.text is not None:
        batch = encode_text(task, r.text, r.seq_len)
    else:
        batch = test_example(task, r.seq_len, r.seed, r.settings.n_test, r.example)
    torch.manual_seed(r.seed)
    try:
        model = BenchModel.for_task(task, r.variant, r.variant_options, r.size, cross=r.cross).to(r.device)
    except UnsupportedError as err:
        hint = ""
        if "cross-attention" in str(err):  # --cross names the variant that lacks it, or none was given
            hint = ("; give --cross a variant that has it (e.g. --cross additive)" if r.cross
                    else "; --cross picks another variant for it (e.g. --cross additive)")
        raise UnsupportedError(f"{err}{hint}") from None
    heads = _head_count(model, task, batch, r.layer)  # a bad combination fails here, not after training
    if r.head is not None and not 0 <= r.head < heads:
        raise AttnbenchError(f"--head: {r.head + 1} does not exist; {r.variant} has heads 1 to {heads} here")
    warnings_ = [w for w in (warning, _weights_check(task, r)) if w]
    if state is not None:
        fit_weights(model, state, r.weights, what)
        record = _scored(model, task, r)
    else:
        record, model = train_and_evaluate(
            task, r.variant, r.variant_options, seq_len=r.seq_len, seed=r.seed, size=r.size, settings=r.settings,
            device=r.device, cross=r.cross, return_model=True,
        )
    if r.save_weights is not None:
        save_weights(model, r.save_weights, identity, what)
    amap = extract_attention(model, task, batch, layer=r.layer)
    test_aer = None
    if amap.kind == "cross" and "alignment" in batch.meta:
        test = task_data(task, "test", r.settings.n_test, r.seq_len, r.seed)
        test_aer = test_alignment_error_rate(model, task, test, layer=r.layer)
    title = _title(r, task, record, amap, test_aer)
    path = draw_attention(amap, head=r.head, title=title, out=r.out)
    return AttentionOutcome(path, record, amap, test_aer, tuple(warnings_))


def _weights_check(task: Task, r: AttentionRequest) -> str | None:
    """A warning where the drawn variant fails `bench check`'s weights check (rows that do not sum
    to 1, a mean over heads, weights other than its reference's): the figure would draw them as its
    attention without a word. Seconds at most, before the training."""
    from attnbench.variants.check import FAIL, run_check

    seq2seq = task.spec.kind == "seq2seq" and r.cross is not None
    name, options = r.cross if seq2seq else (r.variant, r.variant_options)
    result = run_check(name, "weights", options, r.device, d_model=r.size.d_model, n_heads=r.size.n_heads)
    if result.status != FAIL:
        return None
    return (f"{_label(name, options)} fails bench check's weights check ({result.detail}): the figure draws the "
            "weights it returns, which are not its attention as the check defines it")


@torch.no_grad()
def _head_count(model: BenchModel, task: Task, batch: Batch, layer: int | None) -> int:
    """Heads of the drawn attention, from one forward pass of the (untrained) model."""
    device = next(model.parameters()).device
    decoder_input = torch.full((1, 1), task.bos_id, device=device) if model.kind == "seq2seq" else None
    weights = checked_weights(
        model, batch.tokens.to(device), batch.padding_mask.to(device), decoder_input,
        layer=-1 if layer is None else layer,
    )
    return int(weights.shape[1])


def _scored(model: BenchModel, task: Task, r: AttentionRequest) -> dict[str, Any]:
    """The test record of a loaded model (no training)."""
    test = task_data(task, "test", r.settings.n_test, r.seq_len, r.seed)
    if r.device != "cpu":
        test = Batch(test.tokens.to(r.device), test.padding_mask.to(r.device), test.target.to(r.device),
                     {k: v.to(r.device) if isinstance(v, Tensor) else v for k, v in test.meta.items()})
    metrics = evaluate(model, task, test, greedy=task.spec.kind == "seq2seq")
    model.eval()
    metric = task.spec.metric
    record = {**metrics, "metric": metric, "score": metrics.get(metric, metrics["accuracy"]), "chance": task.chance,
              "steps": None, "loaded_from": str(r.weights)}
    baseline = getattr(task, "unigram_bits_per_byte", None)
    if metric == "bits_per_byte" and callable(baseline):
        record["baseline_bits_per_byte"] = baseline()
    return record


def score_line(record: dict[str, Any]) -> str:
    """'test accuracy 0.934 (chance 0.125)' for a record of train_and_evaluate or a loaded model."""
    metric = record["metric"].replace("_", " ")
    if "baseline_bits_per_byte" in record:
        scale = f"unigram baseline {record['baseline_bits_per_byte']:.3f}"
    else:
        scale = f"chance {record['chance']:.3g}"
    return f"test {metric} {record['score']:.3f} ({scale})"


def _title(r: AttentionRequest, task: Task, record: dict, amap: AttentionMap, test_aer: float | None) -> str:
    variant = _label(r.variant, r.variant_options)
    if amap.kind == "cross":
        cross = _label(*r.cross) if r.cross else variant
        what = f"{cross} cross-attention (target × source), decoder layer {amap.layer + 1} of {amap.n_layers}"
        if r.cross:
            what = f"{variant} self-attention + {what}"
    else:
        causal = ", causal" if task.spec.kind == "lm" else ""
        what = f"{variant} self-attention{causal}, layer {amap.layer + 1} of {amap.n_layers}"
    heads = f"head {r.head + 1} of {amap.heads}" if r.head is not None else (
        f"mean of {amap.heads} heads" if amap.heads > 1 else "1 head")
    trained = (
        f"weights from {Path(record['loaded_from']).name}" if record.get("loaded_from")
        else f"{record['steps']} steps (budget {r.settings.steps})"
    )
    conditions = (
        f"{_label(r.task, r.task_options)}, n={r.seq_len}, d_model={r.size.d_model}, seed {r.seed}, {trained}; "
        f"{score_line(record)}"
    )
    source = "--text" if r.text is not None else f"test example {r.example}"
    example = f"{source}; {amap.caption}" if amap.caption else source
    if amap.aer is not None:
        example += f"\nalignment error rate {amap.aer:.2f} on this example"
        if test_aer is not None:
            example += f", {test_aer:.2f} on the test split"
    return f"{what}, {heads}\n{conditions}\n{example}"


# -- the figure ----------------------------------------------------------------------------


def draw_attention(amap: AttentionMap, *, head: int | None, title: str, out: Path) -> Path:
    """A seaborn heatmap of `amap` (queries × keys) with token labels, written to `out`."""
    matrix = amap.matrix(head).numpy()
    n_rows, n_cols = matrix.shape
    longest = max(n_rows, n_cols)
    dense = longest > 40
    cell = 0.2 if dense else 0.32 if longest > 16 else 0.45  # inches per token
    width = max(6.5, n_cols * cell + 3.4)  # + labels and colour bar
    chars = int(width * 72 / (9 * 0.6))  # what fits across the figure: 9 pt, ~0.6 em a character
    title = _wrap(title, chars)
    height = n_rows * cell + 2.4 + 0.2 * title.count("\n")
    with sns.axes_style("white"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        sns.heatmap(
            matrix, ax=ax, cmap=CMAP, vmin=0.0, vmax=max(float(matrix.max()), 1e-6), square=True,
            xticklabels=list(amap.cols), yticklabels=list(amap.rows),
            cbar_kws={"label": "attention weight", "shrink": 0.6},
        )
        ax.tick_params(axis="both", labelsize=7 if dense else 9, length=0)
        ax.set_xticklabels(ax.get_xticklabels(), rotation=90 if _long(amap.cols) else 0)
        ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
        if amap.kind == "cross":
            ax.set_xlabel("source word (key)")
            ax.set_ylabel("target word predicted at this step (query)")
            for r, c in amap.gold:
                ax.add_patch(Rectangle((c, r), 1, 1, fill=False, edgecolor=GOLD, linewidth=2.2, zorder=2))
            top = matrix.argmax(axis=1)
            ax.scatter(top + 0.5, [i + 0.5 for i in range(n_rows)], s=16, c="white", edgecolors="black",
                       linewidths=0.7, zorder=3)
            handles = [  # the gold alignment's entry only where one is drawn (--text has none)
                *([Line2D([], [], marker="s", markersize=10, markerfacecolor="none", markeredgecolor=GOLD,
                          markeredgewidth=2, linestyle="none", label="gold alignment")] if amap.gold else []),
                Line2D([], [], marker="o", markersize=5, markerfacecolor="white", markeredgecolor="black",
                       linestyle="none", label="most-attended source word"),
            ]
            fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
        else:
            ax.set_xlabel("key token")
            ax.set_ylabel("query token")
        fig.suptitle(title, x=0.01, ha="left", fontsize=9, linespacing=1.4)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out)
        except OSError as err:
            raise AttnbenchError(f"--out: cannot write {out}: {err.strerror or err}") from None
    return out


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width, subsequent_indent="  ") for line in text.splitlines())


def _long(labels: tuple[str, ...]) -> bool:
    return any(len(s) > 2 for s in labels)
