"""Accuracy cells: train the harness on a task's train split, early-stop on valid, score on test.

AdamW with linear warm-up and cosine decay, gradient clipping, a step budget, and early stopping
on validation accuracy (the best weights are restored before the test). Everything random is
seeded from the cell's seed: model init (`torch.manual_seed`), minibatch order (a
`torch.Generator`) and the data (the task's own seeded streams), so the same cell on the same
machine gives the same numbers.

The record holds the task's metric (accuracy; exact match; bits per byte for `lm`), accuracy per
dependency-distance bucket (buckets [1,2), [2,4), [4,8), … keyed by their lower edge) where the
task records distances, the chance level, the task's trivial baselines on the same test data
(`Task.trivial_baselines`), steps, wall time and training throughput.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.tasks.base import IGNORE_INDEX, NO_DISTANCE, Batch, Task, shift_right
from attnbench.runner.model import BenchModel, ModelSize

LN2 = math.log(2.0)


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class SeesTheFuture(RuntimeError):
    """The trained model's prediction at some position changed with the tokens after it."""


FUTURE_ROWS = 64  # test rows the trained model's causality is checked on
FUTURE_RTOL = 1e-5  # of the logits' scale: a change past it is the model reading later tokens


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and data sizes of one accuracy cell."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    clip: float = 1.0
    eval_every: int = 50
    patience: int = 4
    n_train: int = 2048
    n_valid: int = 256
    n_test: int = 512

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------- data
_DATA_CACHE: dict[tuple, Batch] = {}


def task_data(task: Task, split: str, n: int, seq_len: int, seed: int) -> Batch:
    """`task.build(...)`, cached in-process: every variant of a sweep sees the same tensors."""
    key = (task.name, tuple(sorted(task.options.items())), split, n, seq_len, seed)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 64:
            _DATA_CACHE.clear()
        size = task.size(split)
        _DATA_CACHE[key] = task.build(split, min(n, size) if size else n, seq_len, seed)
    return _DATA_CACHE[key]


def decoder_input(task: Task, target: Tensor) -> Tensor:
    return shift_right(target, task.bos_id, task.pad_id)


def logits_of(model: BenchModel, task: Task, batch: Batch) -> Tensor:
    if task.spec.kind == "seq2seq":
        return model(batch.tokens, batch.padding_mask, decoder_input(task, batch.target))
    return model(batch.tokens, batch.padding_mask)


def loss_of(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def greedy_decode(model: BenchModel, task: Task, batch: Batch) -> Tensor:
    """Predicted target ids (b, target_len) by greedy decoding, one position at a time."""
    b, width = batch.target.shape
    out = torch.full((b, width), task.pad_id, dtype=torch.long, device=batch.tokens.device)
    bos = torch.full((b, 1), task.bos_id, dtype=torch.long, device=batch.tokens.device)
    for t in range(width):
        logits = model(batch.tokens, batch.padding_mask, torch.cat([bos, out[:, :t]], dim=1))
        out[:, t] = logits[:, -1].argmax(-1)
    return out


@torch.no_grad()
def evaluate(model: BenchModel, task: Task, batch: Batch, *, batch_size: int = 128, greedy: bool = False) -> dict:
    """Metrics of `model` on `batch`: accuracy, exact match, bits per byte (lm), distance buckets."""
    model.eval()
    correct_rows, correct_items, nll_sum = [], [], 0.0
    for start in range(0, len(batch), batch_size):
        part = batch.select(slice(start, start + batch_size))
        logits = logits_of(model, task, part)
        if task.spec.kind == "seq2seq" and greedy:
            pred = greedy_decode(model, task, part)
        else:
            pred = logits.argmax(-1)
        labelled = part.target != IGNORE_INDEX
        hit = (pred == part.target) & labelled
        correct_items.append((hit, labelled))
        nll_sum += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            part.target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        correct_rows.append(hit.sum(-1) == labelled.sum(-1) if hit.dim() > 1 else hit)
    model.train()
    hit = torch.cat([h for h, _ in correct_items])
    labelled = torch.cat([lab for _, lab in correct_items])
    total = int(labelled.sum())
    metrics = {
        "accuracy": float(hit.sum()) / max(1, total),
        "exact_match": float(torch.cat(correct_rows).float().mean()),
        "n_eval": len(batch),
    }
    if task.spec.kind == "lm":
        metrics["bits_per_byte"] = nll_sum / max(1, total) / LN2
    if "distance" in batch.meta and isinstance(batch.meta["distance"], Tensor):
        metrics["by_distance"] = distance_buckets(hit, labelled, batch.meta["distance"])
    return metrics


@torch.no_grad()
def check_sees_no_future(model: BenchModel, task: Task, batch: Batch, seed: int) -> None:
    """SeesTheFuture where the trained model, as it scores the test split (eval mode, no_grad, the
    test rows with their padding), predicts a position from tokens after it: for a language model,
    logits before position t must not change when the input from t on is replaced by other tokens;
    for seq2seq, the decoder's logits before t when its input from t on is. Checked at three cuts t
    (the middle, the one after it, one drawn from `seed`) on FUTURE_ROWS rows. The layer checks
    before training see a fresh layer at a few shapes; this sees the model that is scored, so a leak
    that training grows (a mixing weight that starts at 0), or one at a batch size, position or mask
    the layer checks do not try, cannot score. Other kinds may attend both ways."""
    kind = task.spec.kind
    if kind not in ("lm", "seq2seq"):
        return
    part = batch.select(slice(0, FUTURE_ROWS))
    if kind == "lm":
        inputs, pad, vocab = part.tokens, task.pad_id, task.vocab_size
        run = lambda seq: model(seq, part.padding_mask)  # noqa: E731
    else:
        inputs, pad, vocab = decoder_input(task, part.target), task.pad_id, task.target_vocab_size
        run = lambda seq: model(part.tokens, part.padding_mask, seq)  # noqa: E731
    width = inputs.shape[1]
    if width < 2 or vocab < 3:
        return
    was_training = model.training
    model.eval()
    try:
        base = run(inputs).float()
        gen = torch.Generator().manual_seed(seed)
        cuts = sorted({width // 2, width // 2 + 1, int(torch.randint(1, width, (1,), generator=gen))} - {width})
        for t in cuts:
            other = torch.randint(0, vocab - 1, inputs[:, t:].shape, generator=gen).to(inputs.device)
            other = other + (other >= pad).long()  # any token but padding
            changed = inputs.clone()
            changed[:, t:] = torch.where(inputs[:, t:] == pad, inputs[:, t:], other)  # padding stays padding
            moved = (run(changed).float()[:, :t] - base[:, :t]).abs().max().item()
            scale = max(1.0, base[:, :t].abs().max().item())
            if not moved <= FUTURE_RTOL * scale:
                where = "input" if kind == "lm" else "decoder input"
                raise SeesTheFuture(
                    f"the trained model sees the tokens it predicts: its logits before position {t} changed by "
                    f"{moved:.2e} when its {where} from {t} on was replaced; not scored")
    finally:
        model.train(was_training)


def distance_buckets(hit: Tensor, labelled: Tensor, distance: Tensor) -> dict[str, dict]:
    """Accuracy per power-of-two distance bucket, keyed by the bucket's lower edge."""
    if hit.dim() == 1:  # classify: one distance per example
        hit, labelled, distance = hit[:, None], labelled[:, None], distance[:, None]
    valid = labelled & (distance != NO_DISTANCE) & (distance > 0)
    d = distance[valid]
    h = hit[valid]
    edges = torch.floor(torch.log2(d.double())).long()
    out = {}
    for e in sorted(set(edges.tolist())):
        sel = edges == e
        out[str(2**e)] = {"accuracy": float(h[sel].float().mean()), "count": int(sel.sum())}
    return out


# ---------------------------------------------------------------------------- training
def train_and_evaluate(
    task: Task,
    variant: str,
    options: dict[str, Any],
    *,
    seq_len: int,
    seed: int,
    size: ModelSize,
    settings: TrainSettings,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    cross: tuple[str, dict] | None = None,
    return_model: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], BenchModel]:
    """Train, early-stop and test one (task, variant, seq_len, seed); the cell's metrics.

    With `return_model=True`: (metrics, the trained model with its best weights, in eval mode).
    """
    data = {
        split: task_data(task, split, n, seq_len, seed)
        for split, n in (("train", settings.n_train), ("valid", settings.n_valid), ("test", settings.n_test))
    }
    baselines = trivial_baselines(task, data["train"], data["test"])
    digest = data_digest(data)
    data = {k: _to(v, device) for k, v in data.items()}
    torch.manual_seed(seed)
    model = BenchModel.for_task(task, variant, options, size, cross=cross).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_frac * settings.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, settings.steps, warmup))
    order = torch.Generator().manual_seed(seed)
    autocast = dtype != torch.float32
    train = data["train"]

    best, best_state, stale, step, curve = -1.0, None, 0, 0, []
    started = time.perf_counter()
    for step in range(1, settings.steps + 1):
        idx = torch.randint(len(train), (settings.batch_size,), generator=order)
        part = train.select(idx)
        with torch.autocast(device_type=device, dtype=dtype, enabled=autocast):
            loss = loss_of(logits_of(model, task, part), part.target)
        if not torch.isfinite(loss):
            raise Diverged(f"diverged at step {step} (loss {loss.item()})")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optim.step()
        sched.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            valid = evaluate(model, task, data["valid"])["accuracy"]
            curve.append({"step": step, "loss": round(loss.item(), 5), "valid_accuracy": valid})
            if valid > best:
                best, best_state, stale = valid, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= settings.patience:
                    break
    train_seconds = time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    check_sees_no_future(model, task, data["test"], seed)
    test = evaluate(model, task, data["test"], greedy=task.spec.kind == "seq2seq")
    metric = task.spec.metric
    record = {
        **test,
        "metric": metric,
        "score": test.get(metric, test["accuracy"]),
        "valid_accuracy": best,
        "chance": task.chance,
        "baselines": baselines,
        "data_digest": digest,
        "steps": step,
        "train_seconds": train_seconds,
        "tokens_per_s": step * settings.batch_size * seq_len / max(train_seconds, 1e-9),
        "curve": curve,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    baseline = getattr(task, "unigram_bits_per_byte", None)
    if metric == "bits_per_byte" and callable(baseline):
        record["baseline_bits_per_byte"] = baseline()
    return (record, model.eval()) if return_model else record


def data_digest(data: dict[str, Batch]) -> str:
    """sha256 (16 hex digits) of the cell's splits: each one's tokens, padding mask, target and
    tensor meta, in order. Two runs' cells of one key with other digests trained and were scored
    on other data (a task's generator or split changed between them): `bench compare` does not read
    their scores' difference as a regression."""
    hasher = hashlib.sha256()
    for split in sorted(data):
        batch = data[split]
        parts = [("tokens", batch.tokens), ("padding_mask", batch.padding_mask), ("target", batch.target)]
        parts += sorted((k, v) for k, v in batch.meta.items() if isinstance(v, Tensor))
        for name, tensor in parts:
            hasher.update(f"{split}/{name}/{tensor.dtype}/{tuple(tensor.shape)};".encode())
            hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def trivial_baselines(task: Task, train: Batch, test: Batch) -> dict[str, Any]:
    """`task.trivial_baselines(train, test)` as a record holds them: each a float (a plugin's numpy
    or tensor scalar converted); a value that is not a finite number, or the method raising, is
    named under "error" instead, and the cell still trains and scores."""
    try:
        raw = task.trivial_baselines(train, test)
        if not isinstance(raw, dict):
            raise TypeError(f"returned {type(raw).__name__}, not a dict of name → score")
    except Exception as exc:  # noqa: BLE001 — a plugin's baseline must not cost the cell its score
        return {"error": f"trivial_baselines: {type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            out[str(name)] = number
        else:
            out.setdefault("error", f"trivial_baselines: {name!r} is {value!r}, not a finite number")
    return out


def _to(batch: Batch, device: str) -> Batch:
    if device == "cpu":
        return batch
    meta = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.meta.items()}
    return Batch(batch.tokens.to(device), batch.padding_mask.to(device), batch.target.to(device), meta)
