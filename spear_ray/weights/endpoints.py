"""The two ends of the weight sync inside their processes (no Ray here; actors/weight_sync.py drives them).

`WeightSender`: the learner side. Rank 0 opens the rendezvous store, joins as rank 0 and broadcasts the buckets;
under FSDP2 the other learner ranks call `send` too, to take part in gathering each full parameter.
`EngineReceiver`: a generator whose model lives in its own process (the HF backend): it joins as one member,
receives every bucket straight into one staging buffer while the engine keeps serving, then loads the tensors
(views into it) between batches with `engine.load_weights(..., version=...)`, so no response mixes two versions.
Backends whose workers live elsewhere (vLLM) provide their own receiver with the same async methods
(`weight_sync_receiver()` on the engine).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import torch

from spear_ray.weights.buckets import BucketPlan, flat_size, flat_views, new_buffers, plan_buckets
from spear_ray.weights.flat_params import adopt_flat_layout, in_flat_layout
from spear_ray.weights.group import GroupAddress, WeightSyncGroup, join_group, open_store
from spear_ray.weights.sync import SyncStats, receive_flat, send_flat, send_weights

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WeightReceiver(Protocol):
    """What a generator offers the weight-sync control plane (all coroutines: the actor's loop keeps serving)."""

    async def info(self) -> dict[str, Any]:
        """{"workers": members this generator adds to the group, "dtype": its model dtype name}."""
        ...

    async def join(self, address: GroupAddress, rank: int) -> None:
        """Join as ranks rank .. rank + workers - 1 (blocks until the whole group formed or the timeout)."""
        ...

    async def receive(self, plan: BucketPlan, version: int) -> dict[str, Any]:
        """Receive one sync, load it, set `version`; returns the ack {"version", "tensors", "seconds", ...}."""
        ...

    async def leave(self) -> None:
        """Destroy this member's group handles (after a failure or at shutdown)."""
        ...


class WeightSender:
    """The learner's side. `core` is a LearnerCore (rank, weight_specs, weight_getter, sharded, device)."""

    def __init__(self, core) -> None:
        self.core = core
        self._store = None
        self.group: WeightSyncGroup | None = None
        self.plan: BucketPlan | None = None
        self._buffers: list[torch.Tensor] | None = None  # kept across syncs (no page faults after the first)
        self._flat: torch.Tensor | None = None  # the parameters' own buffer when they live in the plan's layout

    @property
    def device(self) -> str:
        """Where the bucket buffers live: the GPU for NCCL, host memory for gloo (even when training on a GPU)."""
        backend = self.group.address.backend if self.group is not None else "gloo"
        return self.core.device if backend == "nccl" else "cpu"

    def open(self, *, world_size: int, timeout_s: float) -> int:
        """Rank 0: open the rendezvous store (every interface, OS-chosen port); returns the port."""
        if self.core.rank != 0:
            raise ValueError(f"the weight-sync rendezvous is opened by learner rank 0, not rank {self.core.rank}")
        self.leave()
        self._store = open_store(world_size=world_size, timeout_s=timeout_s)
        return int(self._store.port)

    def join(self, address: GroupAddress) -> None:
        """Rank 0 joins as member 0 (blocks until every generator worker joined or the timeout)."""
        if self._store is None:
            raise RuntimeError("WeightSender.join: call open() first (rank 0 opens the rendezvous)")
        device = self.core.device if address.backend == "nccl" else None
        self.group = join_group(address, rank=0, store=self._store, device=device)

    def make_plan(self, *, bucket_bytes: int, dtype: str | None) -> BucketPlan:
        """The bucket layout of this model's parameters on the wire (`dtype`: the generators' dtype, or None)."""
        wire = DTYPES[dtype] if dtype is not None else None
        self.plan = plan_buckets(self.core.weight_specs(dtype=wire), bucket_bytes=bucket_bytes)
        self._buffers = None
        # zero-copy sending: parameters move into the bucket layout when their dtype and device allow it
        self._flat = adopt_flat_layout(self.core.model, self.plan, device=self.device) if self.core.rank == 0 else None
        return self.plan

    def send(self) -> SyncStats:
        """Rank 0 broadcasts every bucket; other ranks gather parameters with it under FSDP2 (else return at once)."""
        if self.plan is None:
            raise RuntimeError("WeightSender.send: no plan (call make_plan first)")
        get = self.core.weight_getter()
        if self.core.rank == 0:
            if self.group is None:
                raise RuntimeError("WeightSender.send on rank 0 before join()")
            if self._flat is not None and in_flat_layout(self.core.model, self.plan, self._flat):
                return send_flat(self.plan, self.group, self._flat)
            if self._buffers is None:
                self._buffers = new_buffers(self.plan, device=self.device)
            return send_weights(self.plan, self.group, get, device=self.device, buffers=self._buffers)
        t0 = time.perf_counter()
        if self.core.sharded:  # the same gathers, in the same order, as rank 0's packing
            for bucket in self.plan.buckets:
                for chunk in bucket:
                    get(self.plan.tensors[chunk.index].name)
        return SyncStats(bytes=0, buckets=0, seconds=time.perf_counter() - t0)

    def leave(self) -> None:
        if self.group is not None:
            self.group.destroy()
        self.group = None
        self._store = None
        self._buffers = None


class EngineReceiver:
    """A generator engine in this process (HFEngine: `.model`, `load_weights`) as one weight-sync member."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.group: WeightSyncGroup | None = None
        self._flat: torch.Tensor | None = None  # staging: every bucket lands here, loaded between batches
        self._plan: BucketPlan | None = None

    def _model(self) -> torch.nn.Module:
        model = getattr(self.engine, "model", None)
        if model is None:
            raise TypeError(
                f"{type(self.engine).__name__} has no in-process `.model`; a backend whose workers live in other "
                "processes must provide weight_sync_receiver()"
            )
        return model

    def _device(self) -> torch.device:
        return next(self._model().parameters()).device

    def _buffer_device(self) -> torch.device:
        """NCCL moves GPU buffers; gloo moves host buffers (copied to the model's device while loading)."""
        nccl = self.group is not None and self.group.address.backend == "nccl"
        return self._device() if nccl else torch.device("cpu")

    async def info(self) -> dict[str, Any]:
        return {"workers": 1, "dtype": dtype_name(next(self._model().parameters()).dtype)}

    async def join(self, address: GroupAddress, rank: int) -> None:
        await self.leave()
        device = self._device() if address.backend == "nccl" else None
        self.group = await asyncio.to_thread(join_group, address, rank=rank, device=device)

    async def receive(self, plan: BucketPlan, version: int) -> dict[str, Any]:
        if self.group is None:
            raise RuntimeError("weight sync: this generator has not joined the group (join first)")
        if plan != self._plan or self._flat is None:  # the staging follows the plan; kept across syncs
            self._flat = torch.empty(flat_size(plan), dtype=torch.uint8, device=self._buffer_device())
            self._plan = plan
        t0 = time.perf_counter()
        # buckets land in the staging buffer while the engine keeps serving; the load waits for a gap between batches
        stats = await asyncio.to_thread(receive_flat, plan, self.group, self._flat)
        received = flat_views(plan, self._flat)  # zero-copy views, in plan order
        count = await self.engine.load_weights(received, version=version, strict=True)
        return {
            "version": self.engine.policy_version,
            "tensors": count,
            "receive_s": stats.seconds,
            "seconds": time.perf_counter() - t0,
        }

    async def leave(self) -> None:
        if self.group is not None:
            self.group.destroy()
        self.group = None


def receiver_for(engine) -> WeightReceiver:
    """The engine's own receiver when it has one (vLLM: workers in other processes), else an EngineReceiver."""
    factory = getattr(engine, "weight_sync_receiver", None)
    return factory() if factory is not None else EngineReceiver(engine)


__all__ = ["DTYPES", "EngineReceiver", "WeightReceiver", "WeightSender", "dtype_name", "receiver_for"]
