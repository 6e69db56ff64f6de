"""One learner rank: the policy model (plain, DDP or FSDP2), AdamW, and the SPEAR train step (SPEAR_SPEC 5.6, 7.7).

A step: recompute pi_old on this rank's on-policy rows (Part A D6), then one optimizer step per on-policy
mini-batch (`ppo_epochs` passes), then the SIL mini-batches on the replay batch (pi_old = stored behaviour log-probs,
replay Clip-Cov/KL-Cov parameters, the whole replay loss times `sil_weight`, SPEC 7.7). loss = pg_loss -
entropy_coef * agg(entropy). Grad-norm clip; a non-finite norm skips the optimizer step (counted in metrics).

Sharding: every rank gets the whole batch and keeps, of each mini-batch of M rows, the contiguous rows
`shard_rows(M, rank, W)` (the first M mod W ranks take one row more). Each micro-batch loss is scaled by
B_micro * W / M, so after DDP/FSDP gradient averaging the gradient equals the full mini-batch's whatever the shard
and micro-batch sizes (exact for the per-sample aggregations; `token-mean` is per micro-batch, as in verl, SPEC 5.5).
Micro-batches are `learner.micro_batch_size` consecutive rows, or, with `learner.max_tokens_per_micro_batch`,
token-budget packs (`token_budget_micro_batches`, verl's dynamic batch size). Every rank runs the same number of
forward/backward passes per mini-batch (the busiest rank's; every rank holds the whole batch, so each computes every
rank's plan): a rank with fewer micro-batches pads with zero-weighted one-row passes, so FSDP's per-forward
collectives stay aligned.

Departures (numbered, SPEAR_SPEC Part A D3):
1. A short last mini-batch is scaled by its own size (official SIL divides it by the full GA).
2. `seq-mean-token-sum-norm` without `algo.loss_norm_length` divides by the whole batch's padded response width.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from spear_ray.algo.filters import truncated_importance_weights
from spear_ray.algo.losses import entropy_bonus_loss, policy_loss
from spear_ray.config import AlgoConfig, LearnerConfig
from spear_ray.data.types import TrainBatch
from spear_ray.generation.logprobs import teacher_forced_logprobs
from spear_ray.learner.checkpoint import load_checkpoint, save_checkpoint
from spear_ray.learner.logprobs import forward_response
from spear_ray.learner.sharding import (
    Meter,
    micro_loss_scale,
    row_lengths,
    shard_rows,
    step_seed,
    token_budget_micro_batches,
)
from spear_ray.models.loading import AttnImplementation, Dtype, load_model
from spear_ray.weights.buckets import TensorSpec, specs_of

# One micro-batch as rows of its batch: a slice (fixed size: views, no copy) or row positions (token budget).
Micro = slice | list[int]


@dataclass(frozen=True)
class MiniBatch:
    """One mini-batch as this rank runs it."""

    shard: TrainBatch | None  # this rank's rows of it (None: the rank has none and only pads)
    plan: list[Micro]  # the shard's micro-batches
    passes: int  # forward/backward passes every rank runs (the busiest rank's micro-batch count)
    dummy: TrainBatch  # a one-row batch for the zero-weighted padding passes
    rows: int  # M, the mini-batch's rows over all ranks


def resolve_is_cap(algo: AlgoConfig, *, max_staleness: int) -> float | None:
    """The truncated IS cap C for on-policy data, or None (Part A D6): algo.truncated_is.enabled 'on' -> C, 'off' ->
    None, 'auto' -> C when rollout.max_staleness > 0 (async rollouts), else None."""
    mode = algo.truncated_is.enabled
    on = mode == "on" or (mode == "auto" and max_staleness > 0)
    return float(algo.truncated_is.cap) if on else None


# ------------------------------------------------------------------------------------------------- the core


class LearnerCore:
    """One rank's model, optimizer and train step. With world_size > 1 the default process group must exist.

    Args:
        model_path: Hugging Face model folder or hub name.
        learner: optimizer, batching and parallelism settings.
        algo: loss settings (loss_mode, clips, Clip-Cov/KL-Cov on-policy and replay parameters, entropy, agg).
        temperature: the rollout temperature (log-probs are taken at it).
        is_cap: truncated importance-weight cap C for on-policy data, or None for no weight (Part A D6).
        dtype, attn_implementation, gradient_checkpointing, trust_remote_code: model loading (`load_model`).
        seed: the run seed (Clip-Cov generators derive from (seed, rank, step)).
        rank, world_size: this rank in the learners' group.
        device: "cpu" or "cuda[:i]".
    """

    def __init__(
        self,
        model_path: str,
        *,
        learner: LearnerConfig,
        algo: AlgoConfig,
        temperature: float = 1.0,
        is_cap: float | None = None,
        dtype: Dtype = "float32",
        attn_implementation: AttnImplementation = "sdpa",
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str = "cpu",
    ) -> None:
        if world_size > 1 and not (dist.is_initialized() and dist.get_world_size() == world_size):
            raise RuntimeError(
                f"LearnerCore(world_size={world_size}) needs the learners' process group first "
                "(init_learner_group); build it through LearnerGroup"
            )
        if is_cap is not None and not is_cap > 0:
            raise ValueError(f"is_cap={is_cap} must be > 0 (algo.truncated_is.cap) or None")
        self.model_path = model_path
        self.learner = learner
        self.algo = algo
        self.temperature = temperature
        self.is_cap = is_cap
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.model = load_model(
            model_path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device=device,
            trust_remote_code=trust_remote_code,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.model.train()
        self.strategy = learner.strategy if world_size > 1 else "none"
        self.module = self._wrap(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=learner.lr, betas=tuple(learner.betas), weight_decay=learner.weight_decay
        )
        self.step = 0  # last completed train_step's `step`
        self.optimizer_steps = 0

    # --------------------------------------------------------------------------------------------- setup

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.strategy == "none":  # one rank: DDP would only copy gradients
            return model
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else None
            # buffers (rotary inv_freq) are equal on every rank: no per-forward buffer broadcast
            return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
        if self.strategy == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            layer_types = tuple(getattr(model, "_no_split_modules", None) or ())
            for module in model.modules():
                if type(module).__name__ in layer_types:
                    fully_shard(module)
            fully_shard(model)
            return model
        raise ValueError(f"learner.strategy={self.strategy!r} must be 'ddp' or 'fsdp2'")

    @contextlib.contextmanager
    def _grad_sync(self, enabled: bool) -> Iterator[None]:
        """Gradient all-reduce on this backward only when `enabled` (the last micro-batch of a mini-batch)."""
        if enabled or self.strategy == "none":
            yield
        elif self.strategy == "ddp":
            with self.module.no_sync():
                yield
        else:
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)

    # --------------------------------------------------------------------------------------------- log-probs

    @torch.no_grad()
    def _logprobs(self, batch: TrainBatch, *, plan: list[Micro], passes: int, dummy: TrainBatch) -> torch.Tensor:
        """(B, R) float32 CPU log-probs of `batch` (0 off the loss mask), micro-batch by micro-batch of `plan`
        (positions into `batch`), in `passes` >= len(plan) forward passes."""
        out = torch.zeros(batch.batch_size, batch.response_width, dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            for j in range(max(passes, len(plan))):
                if j >= len(plan):  # keep FSDP's per-forward all-gathers aligned with the busiest rank
                    forward_response(self.module, dummy, temperature=self.temperature)
                    continue
                micro = batch.select(plan[j])
                trimmed = micro.trim()
                lp = forward_response(self.module, trimmed, temperature=self.temperature).logprobs.float().cpu()
                w = trimmed.response_width
                out[plan[j], :w] = torch.where(micro.loss_mask[:, :w], lp, 0.0)
        finally:
            self.model.train(was_training)
        return out

    def _plan(self, lengths: tuple[torch.Tensor, torch.Tensor], rows: list[int]) -> list[Micro]:
        """The micro-batches of `rows` (indices into the batch `lengths` describes) as positions into `rows`:
        consecutive slices of learner.micro_batch_size, or token-budget packs (learner.max_tokens_per_micro_batch)."""
        budget = self.learner.max_tokens_per_micro_batch
        if budget is None:
            mbs = self.learner.micro_batch_size
            return [slice(s, min(s + mbs, len(rows))) for s in range(0, len(rows), mbs)]
        index = torch.as_tensor(rows, dtype=torch.long)
        return token_budget_micro_batches(lengths[0][index], lengths[1][index], max_tokens=budget)

    def _passes(self, lengths: tuple[torch.Tensor, torch.Tensor], rows_of_ranks: list[list[int]]) -> int:
        """Passes every rank runs over its share: the busiest rank's micro-batch count, at least 1."""
        return max(1, max(len(self._plan(lengths, rows)) for rows in rows_of_ranks))

    def compute_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Log-probs of this rank's rows `shard_rows(B, rank, W)` of `batch` (every rank gets the whole batch; the
        group concatenates the shards in rank order).

        Shape:
            batch.input_ids (B, P + R) -> (len(shard_rows(B)), R) float32 on the CPU, 0 off the loss mask.
        """
        if batch.batch_size == 0:
            raise ValueError("compute_logprobs: the batch is empty")
        lengths = row_lengths(batch.attention_mask, batch.prompt_width)
        shards = [shard_rows(batch.batch_size, rank=r, world_size=self.world_size) for r in range(self.world_size)]
        rows_of_ranks = [list(range(s.start, s.stop)) for s in shards]
        rows = rows_of_ranks[self.rank]
        return self._logprobs(
            batch.select(rows),
            plan=self._plan(lengths, rows),
            passes=self._passes(lengths, rows_of_ranks),
            dummy=batch.select([0]).trim(),
        )

    def probe_logprobs(
        self, prompt_ids: list[int], response_ids: list[int], *, temperature: float | None = None
    ) -> list[float]:
        """Teacher-forced log-probs with the generators' own function (the refit check compares the two).

        Args:
            temperature: None = the rollout temperature.
        """
        t = self.temperature if temperature is None else temperature
        was_training = self.model.training
        self.model.eval()
        try:
            return teacher_forced_logprobs(self.module, prompt_ids, response_ids, temperature=t)
        finally:
            self.model.train(was_training)

    # --------------------------------------------------------------------------------------------- train step

    def _local_rows(
        self, batch_size: int, rank: int | None = None
    ) -> tuple[list[int], list[tuple[int, int, int, int]]]:
        """A rank's (default: this one's) row indices (batch order) and per mini-batch (local start, local stop, M,
        first row)."""
        rank = self.rank if rank is None else rank
        mini = self.learner.mini_batch_size
        rows: list[int] = []
        parts = []
        for s in range(0, batch_size, mini):
            m = min(mini, batch_size - s)
            r = shard_rows(m, rank=rank, world_size=self.world_size)
            parts.append((len(rows), len(rows) + (r.stop - r.start), m, s))
            rows.extend(range(s + r.start, s + r.stop))
        return rows, parts

    def _loss_options(self, *, replay: bool) -> dict:
        a = self.algo
        cov = a.replay_clip_cov if replay else a.clip_cov
        kl = a.replay_kl_cov if replay else a.kl_cov
        return {
            "mode": a.loss_mode,
            "clip_low": a.clip_low,
            "clip_high": a.clip_high,
            "dual_clip": a.dual_clip_c,
            "cov_ratio": cov.ratio,
            "cov_lb": cov.lb,
            "cov_ub": cov.ub,
            "kl_cov_ratio": kl.ratio,
            "kl_coef": kl.coef,
            "agg": a.loss_agg,
        }

    def _micro_loss(
        self, mb: TrainBatch, *, replay: bool, gen: torch.Generator, norm_length: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The actor loss of one micro-batch (SPEC 5.6): pg_loss - entropy_coef * agg(entropy), and its metrics."""
        coef = self.algo.entropy_coef
        res = forward_response(self.module, mb, temperature=self.temperature, with_entropy=True, entropy_grad=coef > 0)
        dev = res.logprobs.device
        mask = mb.loss_mask.to(dev)
        old = mb.old_logprobs.to(dev)
        weights = None
        if not replay and self.is_cap is not None:
            weights = truncated_importance_weights(old, mb.behavior_logprobs.to(dev), cap=self.is_cap, mask=mask)
        if mb.sample_weight is not None:
            sw = mb.sample_weight.to(dev, torch.float32)[:, None].expand_as(res.logprobs)
            weights = sw if weights is None else weights * sw
        pg = policy_loss(
            res.logprobs,
            old,
            mb.advantages.to(dev),
            mask,
            generator=gen,
            norm_length=norm_length,
            is_weights=weights,
            **self._loss_options(replay=replay),
        )
        loss = pg.loss
        agg = self.algo.loss_agg
        if coef > 0:
            loss = loss + entropy_bonus_loss(res.entropy, mask, coef=coef, agg=agg, norm_length=norm_length)
        entropy = torch.where(mask, res.entropy.detach(), 0.0).sum() / mask.sum().clamp_min(1)
        metrics = {**pg.metrics, "entropy": float(entropy), "total": float(loss.detach())}
        return loss, metrics

    def _backward(
        self, mini: MiniBatch, *, replay: bool, weight: float, gen: torch.Generator, norm_length: int, meter: Meter
    ) -> None:
        """Accumulate the gradient of one mini-batch (this rank's shard, micro-batch by micro-batch, in the passes
        every rank runs) into `.grad`."""
        micros = [mini.shard.select(pos).trim() for pos in mini.plan] if mini.shard is not None else []
        passes = mini.passes
        for j in range(passes):
            with self._grad_sync(j == passes - 1):
                if j < len(micros):
                    loss, metrics = self._micro_loss(micros[j], replay=replay, gen=gen, norm_length=norm_length)
                    scale = micro_loss_scale(micros[j].batch_size, mini_rows=mini.rows, world_size=self.world_size)
                    (loss * (scale * weight)).backward()
                    meter.add("sil" if replay else "loss", metrics)
                else:  # an empty or short shard: a zero-weighted pass keeps the gradient collectives aligned
                    lp = forward_response(self.module, mini.dummy, temperature=self.temperature).logprobs
                    (lp.sum() * 0.0).backward()

    def _optimizer_step(self, stats: dict[str, list[float]], *, replay: bool) -> None:
        """Clip the gradient norm; step unless it is non-finite (then count a skipped step); clear gradients."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.learner.grad_clip)
        if hasattr(norm, "full_tensor"):  # FSDP2: a replicated DTensor
            norm = norm.full_tensor()
        norm = float(norm)
        stats["grad_norm"].append(norm)
        if math.isfinite(norm):
            self.optimizer.step()
            self.optimizer_steps += 1
            stats["sil_steps" if replay else "loss_steps"].append(1.0)
        else:
            stats["skipped"].append(1.0)
        self.optimizer.zero_grad(set_to_none=True)

    def _update(
        self,
        minis: list[MiniBatch],
        *,
        replay: bool,
        weight: float,
        gen: torch.Generator,
        norm_length: int,
        meter: Meter,
        stats: dict[str, list[float]],
    ) -> None:
        """One optimizer step per mini-batch of `minis` (`_minibatches`), its loss times `weight`."""
        for mini in minis:
            self.optimizer.zero_grad(set_to_none=True)
            self._backward(mini, replay=replay, weight=weight, gen=gen, norm_length=norm_length, meter=meter)
            self._optimizer_step(stats, replay=replay)

    def _minibatches(self, batch: TrainBatch, *, replay: bool) -> list[MiniBatch]:
        """This rank's part of every mini-batch; on-policy shards get pi_old (D6)."""
        lengths = row_lengths(batch.attention_mask, batch.prompt_width)
        ranks = [self._local_rows(batch.batch_size, rank=r) for r in range(self.world_size)]
        rows, parts = ranks[self.rank]
        local = batch.select(rows)
        if not replay and batch.old_logprobs is None:
            local.old_logprobs = self._logprobs(
                local,
                plan=self._plan(lengths, rows),
                passes=self._passes(lengths, [r for r, _ in ranks]),
                dummy=batch.select([0]).trim(),
            )
        out = []
        for k, (a, b, m, first) in enumerate(parts):
            shares = [r_rows[r_parts[k][0] : r_parts[k][1]] for r_rows, r_parts in ranks]
            out.append(
                MiniBatch(
                    shard=local.select(slice(a, b)) if b > a else None,
                    plan=self._plan(lengths, rows[a:b]),
                    passes=self._passes(lengths, shares),
                    dummy=batch.select([first]).trim(),
                    rows=m,
                )
            )
        return out

    def gradients(
        self, batch: TrainBatch, *, replay: bool = False, weight: float = 1.0, step: int = 0
    ) -> dict[str, torch.Tensor]:
        """The (rank-averaged) gradient of the loss of `batch` taken as one mini-batch, without an optimizer step.

        For tests and diagnostics: micro-batching and sharding must not change it. On-policy: pi_old recomputed
        (so the ratio is 1); replay: the stored `old_logprobs`. Under FSDP2 the full gradients are gathered.

        Returns:
            Parameter name -> gradient on the CPU (float32 clone).
        """
        self._check_batch(batch, what="replay_batch" if replay else "batch")
        if batch.batch_size > self.learner.mini_batch_size:
            raise ValueError(
                f"gradients: the batch has {batch.batch_size} rows > learner.mini_batch_size="
                f"{self.learner.mini_batch_size}; pass one mini-batch"
            )
        gen = torch.Generator().manual_seed(step_seed(self.seed, rank=self.rank, step=step))
        norm_length = self.algo.loss_norm_length or batch.response_width
        self.optimizer.zero_grad(set_to_none=True)
        for mini in self._minibatches(batch, replay=replay):
            self._backward(mini, replay=replay, weight=weight, gen=gen, norm_length=norm_length, meter=Meter())
        out = {}
        for name, p in self.model.named_parameters():
            g = p.grad
            if g is not None and hasattr(g, "full_tensor"):
                g = g.full_tensor()
            out[name] = torch.zeros(p.shape) if g is None else g.detach().float().cpu().clone()
        self.optimizer.zero_grad(set_to_none=True)
        return out

    def _check_batch(self, batch: TrainBatch, *, what: str) -> None:
        if batch.batch_size == 0:
            raise ValueError(f"{what} is empty")
        if batch.advantages is None:
            raise ValueError(f"{what}: advantages are not set (run the advantage step before train_step)")
        if what == "replay_batch" and batch.old_logprobs is None:
            raise ValueError("replay_batch: old_logprobs (the behaviour log-probs stored at insertion) are not set")

    def train_step(
        self,
        batch: TrainBatch,
        *,
        replay_batch: TrainBatch | None = None,
        sil_weight: float = 0.0,
        step: int,
    ) -> dict[str, float]:
        """One learner step on the on-policy batch (every rank gets all of it) and the optional SIL batch.

        Args:
            batch: on-policy samples with advantages. pi_old (D6) is recomputed here unless `batch.old_logprobs` is
                set, which must then be `compute_logprobs(batch)` of the current weights (the driver computes it once
                to store it with the replay samples too).
            replay_batch: replayed samples with recalibrated advantages and stored behaviour `old_logprobs`.
            sil_weight: w_SIL(step) (SPEC 9.1); 0 skips the replay updates entirely.
            step: the learner step (seeds Clip-Cov; recorded in checkpoints).

        Returns:
            This rank's metrics (`loss/*`, `sil/*`, `learner/*`, `time/*`; LearnerGroup averages over ranks).
        """
        self._check_batch(batch, what="batch")
        if not (math.isfinite(sil_weight) and sil_weight >= 0):
            raise ValueError(f"sil_weight={sil_weight} must be a finite value >= 0")
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(step_seed(self.seed, rank=self.rank, step=step))
        meter = Meter()
        stats: dict[str, list[float]] = defaultdict(list)
        minis = self._minibatches(batch, replay=False)
        t1 = time.perf_counter()
        norm_length = self.algo.loss_norm_length or batch.response_width
        for _ in range(self.learner.ppo_epochs):
            self._update(minis, replay=False, weight=1.0, gen=gen, norm_length=norm_length, meter=meter, stats=stats)
        t2 = time.perf_counter()
        use_replay = replay_batch is not None and sil_weight > 0
        if use_replay:
            self._check_batch(replay_batch, what="replay_batch")
            r_norm = self.algo.loss_norm_length or replay_batch.response_width
            r_minis = self._minibatches(replay_batch, replay=True)
            self._update(r_minis, replay=True, weight=sil_weight, gen=gen, norm_length=r_norm, meter=meter, stats=stats)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        self.step = step
        norms = stats["grad_norm"]
        finite = [n for n in norms if math.isfinite(n)]
        return {
            **meter.result(),
            "learner/optimizer_steps": float(len(stats["loss_steps"])),
            "sil/optimizer_steps": float(len(stats["sil_steps"])),
            "learner/skipped_steps": float(len(stats["skipped"])),
            "learner/grad_norm": sum(finite) / len(finite) if finite else float("nan"),
            "learner/grad_norm_max": max(norms, default=0.0),
            "sil/weight": float(sil_weight) if use_replay else 0.0,
            "time/learner_logprobs_s": t1 - t0,
            "time/learner_update_s": t2 - t1,
            "time/learner_sil_s": t3 - t2,
            "time/learner_step_s": t3 - t0,
        }

    # --------------------------------------------------------------------------------------------- weights out

    def weight_specs(self, *, dtype: torch.dtype | None = None) -> list[TensorSpec]:
        """The parameters to sync, named as `model.named_parameters()` (tied weights once), full shapes."""
        return specs_of(((n, p) for n, p in self.model.named_parameters()), dtype=dtype)

    def weight_getter(self):
        """A `get(name) -> tensor` over full parameters. Under FSDP2 each new name all-gathers (a collective: every
        rank must call it with the same names in the same order); the last one is cached for split tensors."""
        params = dict(self.model.named_parameters())
        cache: dict[str, torch.Tensor] = {}

        def get(name: str) -> torch.Tensor:
            if name not in cache:
                cache.clear()
                p = params[name].detach()
                cache[name] = p.full_tensor() if hasattr(p, "full_tensor") else p
            return cache[name]

        return get

    @property
    def sharded(self) -> bool:
        """Parameters are sharded across ranks (every rank takes part in gathering them)."""
        return self.strategy == "fsdp2"

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        """Full parameters on the CPU (tests and debugging; a collective under FSDP2)."""
        get = self.weight_getter()
        return {n: get(n).detach().cpu().clone() for n, _ in self.model.named_parameters()}

    # --------------------------------------------------------------------------------------------- checkpoints

    def save(self, path: str | Path) -> Path:
        """HF-format weights + tokenizer + optimizer + counters (every rank calls; rank 0 writes)."""
        state = {"step": self.step, "optimizer_steps": self.optimizer_steps, "seed": self.seed}
        return save_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            state=state,
            tokenizer_path=self.model_path,
            rank=self.rank,
        )

    def load(self, path: str | Path) -> int:
        """Restore a checkpoint written by `save`; returns its step (the next train_step is bit-identical)."""
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        self.step = int(state["step"])
        self.optimizer_steps = int(state["optimizer_steps"])
        return self.step


__all__ = ["LearnerCore", "resolve_is_cap"]
