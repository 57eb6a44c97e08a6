"""A decoder-only transformer (GPT-2 layout) for the language-model path.

Token and position embeddings, ``n_layer`` pre-LayerNorm blocks (causal self-attention through
``F.scaled_dot_product_attention``, then a GELU MLP), a final LayerNorm and a linear head that
shares its weight with the token embedding. Initialisation follows GPT-2: normal(0, 0.02) for
linear and embedding weights, zero biases, and the two residual projections of every block scaled
by ``1 / sqrt(2 * n_layer)`` so that the residual stream's variance does not grow with depth.

The model holds no parallelism code; DDP and FSDP2 are applied by :mod:`training.lm_loop`, and
each :class:`Block` is the unit FSDP shards (:func:`shard_units`).

Generation keeps a key/value cache per block, so each new token costs one position's work rather
than a pass over the whole context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# One (key, value) pair per block, each [B, n_head, T_cached, head_dim].
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GPTShape:
    """The numbers that fix a GPT's architecture (the vocabulary comes from the token shards)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        if shape.n_embd % shape.n_head:
            raise ValueError(f"model.n_embd={shape.n_embd} must be a multiple of model.n_head={shape.n_head}")
        self.n_head = shape.n_head
        self.qkv = nn.Linear(shape.n_embd, 3 * shape.n_embd, bias=shape.bias)
        self.proj = nn.Linear(shape.n_embd, shape.n_embd, bias=shape.bias)
        self.proj.is_residual_projection = True  # type: ignore[assignment]
        self.dropout = shape.dropout
        self.resid_drop = nn.Dropout(shape.dropout)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            if t != 1:
                raise ValueError("with a key/value cache, feed one token at a time")
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # Without a cache (training, or a prompt's first pass) query and key positions coincide:
        # the causal mask is the plain lower triangle. With a cache, the one new query comes after
        # every cached key and may see all of them.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=cache is None
        )
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.fc = nn.Linear(shape.n_embd, 4 * shape.n_embd, bias=shape.bias)
        self.proj = nn.Linear(4 * shape.n_embd, shape.n_embd, bias=shape.bias)
        self.proj.is_residual_projection = True  # type: ignore[assignment]
        self.drop = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.attn = CausalSelfAttention(shape)
        self.ln_2 = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.mlp = MLP(shape)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln_1(x), cache)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


class GPT(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.shape = shape
        self.wte = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.wpe = nn.Embedding(shape.block_size, shape.n_embd)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList([Block(shape) for _ in range(shape.n_layer)])
        self.ln_f = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        # Weight tying: the output projection is the transposed input embedding.
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * shape.n_layer)
        for module in self.modules():
            if getattr(module, "is_residual_projection", False):
                nn.init.normal_(module.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        """Distinct parameters (the tied head counted once); optionally without ``wpe``."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_position_embedding else n

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits ``[B, T, vocab]`` for token ids ``idx [B, T]`` and the updated key/value cache.

        ``cache`` holds the keys and values of the ``start_pos`` tokens seen before (generation);
        training passes none.
        """
        _, t = idx.shape
        if start_pos + t > self.shape.block_size:
            raise ValueError(
                f"sequence of {start_pos + t} tokens is longer than model.block_size={self.shape.block_size}"
            )
        pos = torch.arange(start_pos, start_pos + t, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache is not None else None)
            new_cache.append(kv)
        return self.lm_head(self.ln_f(x)), new_cache

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) at context ``seq_len``.

        6 N for the matrix multiplies of the parameters (2 forward, 4 backward), plus
        12 * n_layer * n_embd * seq_len for attention's scores and weighted sum (PaLM appendix B).
        """
        s = self.shape
        return 6 * self.num_parameters(exclude_position_embedding=True) + 12 * s.n_layer * s.n_embd * seq_len


def shard_units(model: GPT) -> list[nn.Module]:
    """The submodules FSDP2 shards one by one: every transformer block (the root takes the rest)."""
    return list(model.blocks)


@torch.no_grad()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` ``[1, T]`` by ``max_new_tokens`` sampled tokens; returns ``[1, T + new]``.

    ``temperature`` 0 picks the most likely token (greedy). The key/value cache serves while the
    sequence fits in ``block_size``; past that, the window slides and the cache is rebuilt from the
    last ``block_size - 1`` tokens (positions are absolute, so a cache cannot simply be shifted).
    """
    model.eval()
    block = model.shape.block_size
    out = prompt
    cache: KVCache | None = None
    pos = 0
    for _ in range(max_new_tokens):
        if cache is None:
            context = out[:, -block:] if out.shape[1] <= block else out[:, -(block - 1) :]
            logits, cache = model(context, None, 0)
            pos = context.shape[1]
        else:
            logits, cache = model(out[:, -1:], cache, pos)
            pos += 1
        logits = logits[:, -1, :].float()
        if temperature <= 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = F.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)
        out = torch.cat([out, nxt], dim=1)
        if pos >= block:
            cache = None  # the next token would need position `block`: rebuild from a window
    return out
