"""How a learner step splits its work: rows per rank, passes per rank, loss scales, per-rank seeds, and the
learners' process group (pure functions and torch.distributed set-up; no model here).

Every rank gets the whole batch and keeps, of each mini-batch of M rows, the contiguous rows `shard_rows(M, rank,
W)` (the first M mod W ranks take one row more, so the assignment is deterministic for any M). A micro-batch loss
is scaled by B_micro * W / M; the ranks' gradient mean is then sum_micro B_micro / M * grad(loss_micro).
"""

from __future__ import annotations

import datetime
from collections import defaultdict

import torch.distributed as dist

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio odd constant: spreads (seed, rank, step) over 63 bits


def shard_rows(rows: int, *, rank: int, world_size: int) -> slice:
    """This rank's contiguous rows of a mini-batch of `rows`: the first `rows % world_size` ranks take one more."""
    base, extra = divmod(rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def micro_batches_per_rank(rows: int, *, world_size: int, micro_batch_size: int) -> int:
    """Forward/backward passes every rank runs for a mini-batch of `rows` (that of the largest shard, at least 1)."""
    largest = -(-rows // world_size)
    return max(1, -(-largest // micro_batch_size))


def row_lengths(attention_mask, prompt_width: int):
    """(prompt tokens, response-block tokens) of every row: the real tokens of a left-padded prompt block and of a
    right-padded response block (env/tool tokens included: they are in the forward pass).

    Shape:
        attention_mask (B, P + R) bool -> two (B,) long tensors.
    """
    prompt = attention_mask[:, :prompt_width].sum(dim=1)
    response = attention_mask[:, prompt_width:].sum(dim=1)
    return prompt, response


def token_budget_micro_batches(prompt_lens, response_lens, *, max_tokens: int) -> list[list[int]]:
    """Rows packed into micro-batches of at most `max_tokens` padded tokens (dynamic batch size).

    A micro-batch is trimmed to its longest prompt and longest response, so its size is rows x (max prompt + max
    response). Rows are taken longest first (ties in row order) and added to the open micro-batch while it stays
    within the budget; otherwise a new one opens. Each micro-batch lists its rows in ascending order; together they
    cover every row once.

    Args:
        prompt_lens, response_lens: per-row token counts (`row_lengths`), sequences or (B,) tensors.
        max_tokens: the budget (learner.max_tokens_per_micro_batch).

    Raises:
        ValueError: a single row is longer than the budget (it would not fit even alone).
    """
    p = [int(x) for x in prompt_lens]
    r = [int(x) for x in response_lens]
    if len(p) != len(r):
        raise ValueError(f"prompt_lens ({len(p)}) and response_lens ({len(r)}) must have one entry per row")
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be >= 1")
    order = sorted(range(len(p)), key=lambda i: -(p[i] + r[i]))
    out: list[list[int]] = []
    current: list[int] = []
    width_p = width_r = 0
    for i in order:
        if p[i] + r[i] > max_tokens:
            raise ValueError(
                f"learner.max_tokens_per_micro_batch={max_tokens} is below one sample of {p[i] + r[i]} tokens "
                f"(prompt {p[i]} + response {r[i]}); raise it to at least the longest sample"
            )
        wp, wr = max(width_p, p[i]), max(width_r, r[i])
        if current and (len(current) + 1) * (wp + wr) > max_tokens:
            out.append(sorted(current))
            current, wp, wr = [], p[i], r[i]
        current.append(i)
        width_p, width_r = wp, wr
    if current:
        out.append(sorted(current))
    return out


def micro_loss_scale(micro_rows: int, *, mini_rows: int, world_size: int) -> float:
    """The factor on a micro-batch loss: B_micro * W / M (the mean over ranks then gives B_micro / M)."""
    return micro_rows * world_size / mini_rows


def step_seed(seed: int, *, rank: int, step: int) -> int:
    """A 63-bit seed for the Clip-Cov generator of (seed, rank, step) (Part A D7)."""
    x = seed
    for v in (rank, step):
        x = ((x ^ v) * _SEED_MIX + v) % (1 << 63)
    return x


class Meter:
    """Per-step metric accumulator: means of per-micro-batch values, sums of counts."""

    SUMS = ("tokens", "clip_cov_detached", "clip_cov_candidates", "kl_cov_selected")

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, prefix: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.total[f"{prefix}/{k}"] += v
            self.count[f"{prefix}/{k}"] += 1

    def result(self) -> dict[str, float]:
        out = {}
        for k, v in self.total.items():
            out[k] = v if k.rsplit("/", 1)[1] in self.SUMS else v / self.count[k]
        return out


def init_learner_group(
    *,
    backend: str,
    rank: int,
    world_size: int,
    timeout_s: float,
    store: dist.Store | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> None:
    """Join the learners' default torch.distributed group through rank 0's store at `host:port` (rank 0 passes its
    server store; `host` is rank 0's node address, 127.0.0.1 on one machine)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def resolve_backend(backend: str, *, device: str) -> str:
    """learner.backend: auto = nccl on CUDA, gloo on CPU."""
    if backend == "auto":
        return "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl" and not device.startswith("cuda"):
        raise ValueError(
            f"learner.backend='nccl' needs CUDA but the learner device is {device!r}; use 'gloo' or 'auto'"
        )
    return backend


__all__ = [
    "Meter",
    "init_learner_group",
    "micro_batches_per_rank",
    "micro_loss_scale",
    "resolve_backend",
    "row_lengths",
    "shard_rows",
    "step_seed",
    "token_budget_micro_batches",
]
