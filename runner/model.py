"""The model harness: a small pre-norm transformer around any registered attention variant.

    model = BenchModel.for_task(task, "local", {"window": 16}, ModelSize(d_model=64, n_layers=2))
    logits = model(batch.tokens, batch.padding_mask)            # classify / tag / lm
    logits = model(batch.tokens, batch.padding_mask, decoder_input)   # seq2seq

Heads per task kind:
- classify: the encoder's states are pooled and classified. `task.pooling` picks the pool: "mean"
  over non-pad tokens (LRA's choice, the default) or "last" non-pad token (tasks whose question sits
  at the end, such as `distance`, where a mean would smear the answer over the whole input).
- tag, lm: a per-token head; lm self-attention is causal.
- seq2seq: encoder + decoder; the decoder has causal self-attention and cross-attention into the
  encoder, both through the variant — or through `cross_variant`, so that `additive` can be studied
  in its original encoder-decoder role behind any self-attention.

Positions are sinusoidal (or learned, `ModelSize(positions="learned")`) unless the variant's spec
says it brings its own (`own_positions`).
A combination the variant does not support (causal, cross, padding) raises `UnsupportedError`
when the model is built or first called; the runner records the cell as `unsupported`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from attnbench.errors import AttnbenchError, UnsupportedError
from attnbench.variants.base import build_variant, get_variant_spec


@dataclass(frozen=True)
class ModelSize:
    """Width and depth of the harness."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 2
    positions: str = "sinusoidal"  # or "learned" (up to max_len positions); none if the variant has its own
    max_len: int = 8192  # positions a learned table holds

    def __post_init__(self) -> None:
        if self.positions not in ("sinusoidal", "learned"):
            raise AttnbenchError(f"model positions must be 'sinusoidal' or 'learned', got {self.positions!r}")

    def to_dict(self) -> dict[str, int | str]:
        return dict(vars(self))


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """(n, d) fixed sin/cos position codes (Vaswani et al. 2017)."""
    position = rearrange(torch.arange(n, dtype=torch.float32), "n -> n 1")
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    codes = torch.zeros(n, d)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: d // 2])
    return codes


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP; each with a residual."""

    def __init__(self, size: ModelSize, variant: str, options: dict, cross: tuple[str, dict] | None):
        super().__init__()
        d = size.d_model
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = build_variant(variant, d_model=d, n_heads=size.n_heads, **options)
        self.norm_cross = nn.LayerNorm(d) if cross else None
        self.cross_attn = (
            build_variant(cross[0], d_model=d, n_heads=size.n_heads, **cross[1]) if cross else None
        )
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, size.mlp_ratio * d), nn.GELU(), nn.Linear(size.mlp_ratio * d, d)
        )

    def forward(
        self,
        x: Tensor,
        pad: Tensor | None,
        *,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_pad: Tensor | None = None,
        need_weights: bool = False,
        self_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """(x, weights): the cross-attention weights when `need_weights`, or the self-attention
        weights (b, h, n, n) instead when `self_weights`; None when neither is asked for."""
        asked = {"need_weights": True} if self_weights else {}  # the usual call is unchanged
        attended, own = self.self_attn(self.norm_self(x), key_padding_mask=pad, causal=causal, **asked)
        x = x + attended
        weights = None
        if self.cross_attn is not None:
            attended, weights = self.cross_attn(
                self.norm_cross(x), memory, key_padding_mask=memory_pad, need_weights=need_weights
            )
            x = x + attended
        if self_weights:
            weights = own
        return x + self.mlp(self.norm_mlp(x)), weights


class Stack(nn.Module):
    """Embedding + positions + blocks + final norm."""

    def __init__(self, vocab: int, size: ModelSize, variant: str, options: dict, cross=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, size.d_model)
        self.positions = None if get_variant_spec(variant).own_positions else size.positions
        self.learned = nn.Embedding(size.max_len, size.d_model) if self.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(size, variant, options, cross) for _ in range(size.n_layers))
        self.norm = nn.LayerNorm(size.d_model)

    def forward(
        self, tokens: Tensor, pad: Tensor | None, *, weights_layer: int | None = None, **kwargs
    ) -> tuple[Tensor, Tensor | None]:
        """(states, weights of block `weights_layer` (default: the last), None unless asked for)."""
        x = self.embed(tokens)
        n = tokens.shape[1]
        if self.positions == "learned":
            if n > self.learned.num_embeddings:
                raise AttnbenchError(f"sequence of {n} tokens exceeds the {self.learned.num_embeddings} learned positions")
            x = x + self.learned.weight[:n]
        elif self.positions == "sinusoidal":
            x = x + sinusoidal_positions(n, x.shape[-1]).to(x)
        chosen = len(self.blocks) - 1 if weights_layer is None else weights_layer
        asks = {k: kwargs.pop(k) for k in ("need_weights", "self_weights") if k in kwargs}
        weights = None
        for i, block in enumerate(self.blocks):
            x, found = block(x, pad, **kwargs, **(asks if i == chosen else {}))
            if i == chosen:
                weights = found
        return self.norm(x), weights


class BenchModel(nn.Module):
    """Encoder (and decoder for seq2seq) with the head that the task's kind needs."""

    def __init__(
        self,
        kind: str,
        vocab_size: int,
        n_out: int,
        variant: str,
        options: dict[str, Any],
        size: ModelSize,
        *,
        pooling: str = "mean",
        target_vocab_size: int | None = None,
        cross: tuple[str, dict] | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.pooling = kind, pooling
        spec = get_variant_spec(variant)
        if kind in ("lm", "seq2seq") and not spec.supports_causal:
            raise UnsupportedError(f"{variant} does not support causal attention, which {kind} needs")
        if kind == "seq2seq":
            cross = cross or (variant, options)
            if not get_variant_spec(cross[0]).supports_cross:
                raise UnsupportedError(f"{cross[0]} does not support cross-attention, which seq2seq needs")
        self.encoder = Stack(vocab_size, size, variant, options)
        self.decoder = (
            Stack(target_vocab_size or vocab_size, size, variant, options, cross)
            if kind == "seq2seq"
            else None
        )
        self.head = nn.Linear(size.d_model, n_out)

    @classmethod
    def for_task(cls, task, variant: str, options: dict, size: ModelSize, cross=None) -> BenchModel:
        """The model that `task` needs, around `variant`."""
        kind = task.spec.kind
        n_out = {
            "classify": task.n_classes,
            "tag": task.n_classes,
            "lm": task.vocab_size,
            "seq2seq": getattr(task, "target_vocab_size", task.vocab_size),
        }[kind]
        return cls(
            kind,
            task.vocab_size,
            n_out,
            variant,
            options,
            size,
            pooling=getattr(task, "pooling", "mean"),
            target_vocab_size=getattr(task, "target_vocab_size", None),
            cross=cross,
        )

    def forward(
        self,
        tokens: Tensor,
        padding_mask: Tensor,
        decoder_input: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        pad = padding_mask if bool(padding_mask.any()) else None
        states, _ = self.encoder(tokens, pad, causal=self.kind == "lm")
        if self.kind == "seq2seq":
            states, weights = self.decoder(
                decoder_input, None, causal=True, memory=states, memory_pad=pad, need_weights=need_weights
            )
            logits = self.head(states)
            return (logits, weights) if need_weights else logits
        if self.kind == "classify":
            states = self.pool(states, padding_mask)
        return self.head(states)

    def attention_weights(
        self, tokens: Tensor, padding_mask: Tensor, decoder_input: Tensor | None = None, *, layer: int = -1
    ) -> Tensor:
        """Weights (b, h, n, m) of block `layer` (0-based; negative counts from the last).

        classify / tag / lm: the encoder's self-attention (n = m = tokens; causal for lm).
        seq2seq: the decoder's cross-attention (n = decoder_input positions, m = tokens).
        """
        stack = self.decoder if self.kind == "seq2seq" else self.encoder
        depth = len(stack.blocks)
        if not -depth <= layer < depth:
            raise AttnbenchError(f"layer {layer} does not exist: the model has {depth} layers")
        chosen = layer % depth
        pad = padding_mask if bool(padding_mask.any()) else None
        if self.kind == "seq2seq":
            if decoder_input is None:
                raise AttnbenchError("seq2seq attention weights need the decoder input")
            memory, _ = self.encoder(tokens, pad)
            _, weights = self.decoder(
                decoder_input, None, causal=True, memory=memory, memory_pad=pad, need_weights=True, weights_layer=chosen
            )
        else:
            _, weights = self.encoder(tokens, pad, causal=self.kind == "lm", self_weights=True, weights_layer=chosen)
        if weights is None:
            raise UnsupportedError("the attention variant returned no weights although need_weights=True was asked")
        return weights

    def pool(self, states: Tensor, padding_mask: Tensor) -> Tensor:
        """(b, n, d) → (b, d): mean over real tokens, or the last real token."""
        keep = (~padding_mask).to(states.dtype)
        if self.pooling == "last":
            last = (keep.sum(dim=1).long() - 1).clamp(min=0)
            return states[torch.arange(states.shape[0], device=states.device), last]
        total = torch.einsum("bnd,bn->bd", states, keep)
        return total / keep.sum(dim=1, keepdim=True).clamp(min=1.0)
