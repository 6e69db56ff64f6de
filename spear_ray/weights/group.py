"""The dedicated weight-sync process group: learner rank 0 (rank 0) plus every generator worker (ranks 1..N).

Standalone from any default torch.distributed group (the learners' DDP group, vLLM's own TP group): members meet
through their own TCPStore that rank 0 opens with an OS-chosen port (at `node_address()`: 127.0.0.1 on one node, rank
0's node address on a multi-node Ray cluster), under a per-creation prefix, and
build a gloo (CPU) or NCCL (GPU) process group object directly, so the group can be created, destroyed and
re-created without touching global state. Every collective carries an explicit timeout; failures raise
`WeightSyncError` naming the group, the rank and the member. The Ray control plane lives in actors/weight_sync.py.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")
LOOPBACK = "127.0.0.1"


class WeightSyncError(RuntimeError):
    """A weight-sync collective failed or timed out (the message names the member when it is known)."""


@dataclass(frozen=True)
class GroupAddress:
    """Everything a member needs to join: handed to every member over the control plane."""

    host: str  # where rank 0's TCPStore listens
    port: int  # the port the OS gave rank 0's TCPStore
    world_size: int  # 1 + number of generator workers
    backend: str  # "gloo" | "nccl"
    timeout_s: float  # rendezvous and per-collective timeout
    name: str  # unique per creation: the store prefix, so a re-created group never reads stale keys
    members: tuple[str, ...]  # a readable name per rank, for error messages ("learner-0", "generator-1/worker-0")

    def to_dict(self) -> dict:
        """Plain data (for transports that do not pickle, e.g. vLLM's msgpack RPC)."""
        return {**dataclasses.asdict(self), "members": list(self.members)}

    @classmethod
    def from_dict(cls, data: dict) -> GroupAddress:
        return cls(**{**data, "members": tuple(data["members"])})

    def member(self, rank: int) -> str:
        return f"rank {rank} ({self.members[rank]})" if 0 <= rank < len(self.members) else f"rank {rank}"


def resolve_backend(backend: str, *, device: torch.device | str | None = None) -> str:
    """`auto` -> nccl when the tensors live on CUDA, else gloo; an explicit choice is checked for availability."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if backend == "auto":
        return "nccl" if dev.type == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"weight-sync backend={backend!r} must be one of auto, {', '.join(BACKENDS)}")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ValueError("weight-sync backend='nccl' is not available in this torch build (use 'gloo' or 'auto')")
    if backend == "gloo" and dev.type == "cuda":
        raise ValueError("weight-sync backend='gloo' cannot move CUDA tensors here (use 'nccl' or 'auto')")
    return backend


def rendezvous_host(nodes: list[dict], node_id: str) -> str:
    """Where the members of a group reach a store opened on node `node_id`: 127.0.0.1 when the Ray cluster has one
    alive node (every member is on this machine), else that node's address as Ray knows it (`NodeManagerAddress`,
    the address Ray's own inter-node traffic uses).

    Args:
        nodes: `ray.nodes()`.
        node_id: the opening process's node (`ray.get_runtime_context().get_node_id()`).
    """
    alive = [n for n in nodes if n.get("Alive")]
    if len(alive) <= 1:
        return LOOPBACK
    for n in alive:
        if n.get("NodeID") == node_id:
            return str(n["NodeManagerAddress"])
    raise WeightSyncError(f"node {node_id} is not among the cluster's alive nodes; cannot name a rendezvous address")


def node_address() -> str:
    """The rendezvous address of a store this process opens (`rendezvous_host`): 127.0.0.1 outside Ray and on a
    one-node Ray cluster, this node's address on a multi-node one. A store listens on every interface, so members
    on other nodes connect to it there, and on one machine everything stays on loopback."""
    import sys

    ray = sys.modules.get("ray")  # never import Ray here: the library runs without it
    if ray is None or not ray.is_initialized():
        return LOOPBACK
    return rendezvous_host(ray.nodes(), ray.get_runtime_context().get_node_id())


def open_store(*, world_size: int, timeout_s: float, host: str = LOOPBACK) -> dist.TCPStore:
    """Rank 0's TCPStore server on an OS-chosen free port (read it back from `store.port`).

    Binding port 0 inside the store itself leaves no window between picking a port and listening on it.
    """
    if world_size < 2:
        raise ValueError(f"weight-sync group world_size={world_size} must be >= 2 (learner rank 0 + >= 1 generator)")
    return dist.TCPStore(
        host,
        0,
        world_size,
        is_master=True,
        timeout=datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


class WeightSyncGroup:
    """One member's handle on the group: broadcast with a timeout, barrier, destroy."""

    def __init__(self, address: GroupAddress, *, rank: int, pg, store: dist.Store) -> None:
        self.address = address
        self.rank = rank
        self._pg = pg
        self._store = store  # kept alive: rank 0's store is the server every late joiner still talks to

    @property
    def world_size(self) -> int:
        return self.address.world_size

    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.address.timeout_s)

    def broadcast_async(self, tensor: torch.Tensor, *, src: int = 0):
        """Start a broadcast of `tensor` from `src`; returns the Work to pass to `wait`."""
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        opts.rootTensor = 0
        opts.timeout = self.timeout
        return self._pg.broadcast([tensor], opts)

    def wait(self, work, *, what: str) -> None:
        """Wait for `work` at most the group timeout; failures become WeightSyncError with context."""
        try:
            work.wait(self.timeout)
        except Exception as e:  # gloo/NCCL raise bare RuntimeErrors without the group or the member
            raise WeightSyncError(
                f"weight-sync group {self.address.name!r}: {what} failed on {self.address.member(self.rank)} "
                f"(timeout {self.address.timeout_s:g} s, world size {self.world_size}): {e}"
            ) from e

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0, what: str = "broadcast") -> None:
        """Broadcast `tensor` from `src` in place and wait (timeout = the group's)."""
        self.wait(self.broadcast_async(tensor, src=src), what=what)

    def barrier(self) -> None:
        """All members meet (a 1-element broadcast: works on every backend without a device hint)."""
        device = "cuda" if self.address.backend == "nccl" else "cpu"
        self.broadcast(torch.zeros(1, device=device), what="barrier")

    def destroy(self) -> None:
        """Release the group's connections (safe to call twice)."""
        if self._pg is not None:
            try:
                if self.address.backend == "nccl":
                    self._pg.abort()  # NCCL: abort frees communicators without waiting on a possibly dead peer
                else:
                    self._pg.shutdown()
            finally:
                self._pg = None
                self._store = None


def join_group(
    address: GroupAddress,
    *,
    rank: int,
    store: dist.TCPStore | None = None,
    device: torch.device | str | None = None,
) -> WeightSyncGroup:
    """Join the group as `rank`; blocks until every member joined or `address.timeout_s` passes.

    Args:
        address: the group address rank 0 published.
        rank: this member's rank (0 = learner rank 0; generators in the control plane's deterministic order).
        store: rank 0 passes the server store from `open_store`; the others connect as clients.
        device: the CUDA device for NCCL (ignored by gloo).
    """
    if not 0 <= rank < address.world_size:
        raise ValueError(f"weight-sync rank={rank} is outside [0, {address.world_size}) for group {address.name!r}")
    if (rank == 0) != (store is not None):
        raise ValueError("weight-sync: rank 0 joins with the store from open_store(); other ranks pass store=None")
    timeout = datetime.timedelta(seconds=address.timeout_s)
    try:
        if store is None:
            store = dist.TCPStore(address.host, address.port, address.world_size, is_master=False, timeout=timeout)
        prefixed = dist.PrefixStore(f"spear_weight_sync/{address.name}/", store)
        if address.backend == "gloo":
            pg = dist.ProcessGroupGloo(prefixed, rank, address.world_size, timeout)
        elif address.backend == "nccl":
            if device is not None:
                torch.cuda.set_device(torch.device(device))
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            pg = dist.ProcessGroupNCCL(prefixed, rank, address.world_size, opts)
        else:
            raise ValueError(f"weight-sync backend={address.backend!r} must be one of {BACKENDS}")
    except ValueError:
        raise
    except Exception as e:  # store connect / rendezvous failures: add who we are and what we waited for
        raise WeightSyncError(
            f"weight-sync group {address.name!r}: {address.member(rank)} could not join at "
            f"{address.host}:{address.port} within {address.timeout_s:g} s (world size {address.world_size}; "
            f"members {list(address.members)}): {e}"
        ) from e
    return WeightSyncGroup(address, rank=rank, pg=pg, store=store)


__all__ = [
    "BACKENDS",
    "LOOPBACK",
    "GroupAddress",
    "WeightSyncError",
    "WeightSyncGroup",
    "join_group",
    "node_address",
    "open_store",
    "rendezvous_host",
    "resolve_backend",
]
