"""Learner actors: `LearnerWorker` (one rank: a thin adapter around `spear_ray.learner.LearnerCore`) and
`LearnerGroup` (driver side: starts N ranks, joins them into one torch.distributed group, sends each
call to every rank and merges the answers). `num_workers=0` builds one plain LearnerWorker in this process, so the
whole loop can be debugged without Ray workers (DESIGN "LearnerGroup"; STYLE "Thin actors").

Group creation: rank 0 opens a TCPStore with an OS-chosen port and reports its node address (127.0.0.1 on one
machine, its node IP on a multi-node cluster: `weights.group.node_address`), then every rank joins concurrently
(`init_process_group(store=...)`, backend auto = nccl on GPU, gloo on CPU); all waits carry `timeout_s`.
"""

from __future__ import annotations

import datetime
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist

from actors.waiting import MemberTimeout, wait_all
from spear_ray.config import AlgoConfig, Config, LearnerConfig
from spear_ray.data.types import TrainBatch
from spear_ray.learner.core import LearnerCore, resolve_is_cap
from spear_ray.learner.sharding import init_learner_group, resolve_backend
from spear_ray.models.loading import AttnImplementation, Dtype
from spear_ray.weights.endpoints import WeightSender
from spear_ray.weights.group import node_address

SUMMED = ("tokens", "clip_cov_detached", "clip_cov_candidates", "kl_cov_selected")


def reduce_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Merge rank metrics: counts summed, `time/*` the slowest rank, everything else the mean."""
    out: dict[str, float] = {}
    for key in per_rank[0]:
        values = [m[key] for m in per_rank if key in m]
        if key.rsplit("/", 1)[-1] in SUMMED:
            out[key] = float(sum(values))
        elif key.startswith("time/"):
            out[key] = float(max(values))
        else:
            out[key] = float(sum(values) / len(values))
    return out


class LearnerWorker:
    """One learner rank. Built in two calls: `rendezvous()` on rank 0, then `setup(host, port)` on every rank.

    Args:
        model_path: the model folder the learner starts from.
        core: LearnerCore's keyword arguments other than rank, world_size and device (learner, algo,
            temperature, is_cap, dtype, ...; `LearnerGroup` builds them once for every rank).
        rank, world_size: this rank of the learners' group.
        device: "cpu" or "cuda".
        timeout_s: rendezvous and collective timeout of the learners' group.
        num_threads: torch intra-op threads (Ray sets OMP_NUM_THREADS=1 in actors); None leaves it.
    """

    def __init__(
        self,
        model_path: str,
        *,
        core: dict[str, Any],
        rank: int,
        world_size: int,
        device: str = "cpu",
        timeout_s: float = 600.0,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._args = dict(core, rank=rank, world_size=world_size, device=device)
        self.model_path = model_path
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self._store: dist.Store | None = None
        self.core: LearnerCore | None = None
        self.sender: WeightSender | None = None

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: open the learners' TCPStore (OS-chosen port, every interface); returns (this node's address, the
        port), the port 0 for one rank."""
        if self.world_size == 1:
            return "127.0.0.1", 0  # no other rank connects
        self._store = dist.TCPStore(
            "127.0.0.1",  # the server listens on every interface; the address only matters to clients
            0,
            self.world_size,
            is_master=True,
            timeout=datetime.timedelta(seconds=self.timeout_s),
            wait_for_workers=False,
        )
        return node_address(), int(self._store.port)

    def setup(self, host: str, port: int) -> dict[str, Any]:
        """Join the learners' group (when world_size > 1) and build the core; returns {"pid", "rank", "device"}."""
        device = self._args["device"]
        if self.world_size > 1:
            backend = resolve_backend(self._args["learner"].backend, device=device)
            if device.startswith("cuda"):
                torch.cuda.set_device(torch.device(device))
            init_learner_group(
                backend=backend,
                rank=self.rank,
                world_size=self.world_size,
                timeout_s=self.timeout_s,
                store=self._store,
                host=host,
                port=port,
            )
        self.core = LearnerCore(self.model_path, **self._args)
        self.sender = WeightSender(self.core)
        return self.ping()

    def ping(self) -> dict[str, Any]:
        """Liveness: pid, rank, last step."""
        return {"pid": os.getpid(), "rank": self.rank, "step": self.core.step if self.core else -1}

    # ------------------------------------------------------------------------------------------- training

    def train_step(
        self, batch: TrainBatch, replay_batch: TrainBatch | None, sil_weight: float, step: int
    ) -> dict[str, float]:
        return self.core.train_step(batch, replay_batch=replay_batch, sil_weight=sil_weight, step=step)

    def compute_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        return self.core.compute_logprobs(batch)

    def gradients(self, batch: TrainBatch, replay: bool, weight: float, step: int) -> dict[str, torch.Tensor]:
        return self.core.gradients(batch, replay=replay, weight=weight, step=step)

    def probe_logprobs(self, prompt_ids: list[int], response_ids: list[int], temperature: float | None) -> list[float]:
        return self.core.probe_logprobs(prompt_ids, response_ids, temperature=temperature)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.core.state_dict_cpu()

    def vocab_size(self) -> int:
        return int(self.core.model.get_output_embeddings().weight.shape[0])

    def save(self, path: str) -> str:
        return str(self.core.save(path))

    def load(self, path: str) -> int:
        return self.core.load(path)

    # ------------------------------------------------------------------------------------------- weight sync

    def weight_sync_open(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Open the weight-sync rendezvous; returns (this node's address, the port) for the members to join."""
        return node_address(), self.sender.open(world_size=world_size, timeout_s=timeout_s)

    def weight_sync_join(self, address) -> None:
        self.sender.join(address)

    def weight_sync_plan(self, bucket_bytes: int, dtype: str | None):
        return self.sender.make_plan(bucket_bytes=bucket_bytes, dtype=dtype)

    def weight_sync_send(self) -> dict[str, float]:
        return self.sender.send().metrics()

    def weight_sync_leave(self) -> None:
        self.sender.leave()


LearnerWorkerActor = ray.remote(LearnerWorker)


class LearnerGroup:
    """N learner ranks as Ray actors (or one in-process worker with `num_workers=0`), driven from the caller.

    Args:
        model_path: the model folder the learner starts from.
        learner: `num_ranks`, resources per rank, backend, strategy, optimizer and batch sizes.
        algo: loss settings.
        num_workers: ranks to start; None = learner.num_ranks; 0 = in-process (one rank, no Ray).
        temperature, is_cap, dtype, attn_implementation, gradient_checkpointing, trust_remote_code, seed: LearnerCore.
        timeout_s: start-up, rendezvous and collective timeout of the learners' group.
        call_timeout_s: the longest any one call (a train step) may take before it is reported as hung.
        name: actor name prefix ("learner" -> "learner-0", ...).
    """

    def __init__(
        self,
        model_path: str,
        *,
        learner: LearnerConfig,
        algo: AlgoConfig,
        num_workers: int | None = None,
        temperature: float = 1.0,
        is_cap: float | None = None,
        dtype: Dtype = "float32",
        attn_implementation: AttnImplementation = "sdpa",
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        seed: int = 0,
        timeout_s: float = 600.0,
        call_timeout_s: float = 3600.0,
        name: str = "learner",
    ) -> None:
        n = learner.num_ranks if num_workers is None else num_workers
        if n < 0:
            raise ValueError(f"num_workers={n} must be >= 0 (0 = in-process)")
        self.num_workers = n
        self.world_size = max(n, 1)
        self.timeout_s = timeout_s
        self.call_timeout_s = call_timeout_s
        self.temperature = temperature
        self.names = [f"{name}-{r}" for r in range(self.world_size)]
        gpus = learner.num_gpus_per_rank
        core = dict(
            learner=learner,
            algo=algo,
            temperature=temperature,
            is_cap=is_cap,
            dtype=dtype,
            attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing,
            trust_remote_code=trust_remote_code,
            seed=seed,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner-inproc")
        self._local: LearnerWorker | None = None
        self.workers: list[Any] = []
        self.rendezvous: tuple[str, int] | None = None  # (rank 0's node address, store port) once the group formed
        if n == 0:
            device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
            self._local = LearnerWorker(model_path, core=core, rank=0, world_size=1, device=device, timeout_s=timeout_s)
            self._local.setup("127.0.0.1", 0)
            return
        if not ray.is_initialized():
            raise RuntimeError(f"LearnerGroup(num_workers={n}) needs ray.init() first (num_workers=0 runs in-process)")
        self._check_resources(n, learner)
        threads = learner.torch_threads
        suffix = uuid.uuid4().hex[:6]  # Ray actor names are unique per namespace; errors use self.names
        for r in range(n):
            self.workers.append(
                LearnerWorkerActor.options(
                    num_cpus=learner.num_cpus_per_rank,
                    num_gpus=gpus,
                    name=f"{self.names[r]}-{suffix}",
                    max_restarts=0,
                ).remote(
                    model_path,
                    core=core,
                    rank=r,
                    world_size=n,
                    device="cuda" if gpus > 0 else "cpu",
                    timeout_s=timeout_s,
                    num_threads=threads,
                )
            )
        try:
            ((host, port),) = wait_all(
                [(self.names[0], self.workers[0].rendezvous.remote())], timeout_s=timeout_s, what="start"
            )
            self.rendezvous = (host, port)  # rank 0's node address: where the other ranks connect
            wait_all(self._submit("setup", host, port), timeout_s=timeout_s, what="learner group setup")
        except MemberTimeout as e:
            note = self._resource_note(n, learner)
            self.close()
            raise MemberTimeout(e.members, f"learner group start ({note})", timeout_s) from e
        except BaseException:
            self.close()  # no half-started group left holding CPUs/GPUs; the error propagates
            raise

    @classmethod
    def from_config(
        cls, model_path: str, config: Config, *, num_workers: int | None = None, timeout_s: float = 600.0
    ) -> LearnerGroup:
        """A group from the run config: learner and algo sections, model dtype/attention/checkpointing, rollout
        temperature, the truncated-IS cap resolved against rollout.max_staleness, and the run seed."""
        return cls(
            model_path,
            learner=config.learner,
            algo=config.algo,
            num_workers=num_workers,
            temperature=config.rollout.temperature,
            is_cap=resolve_is_cap(config.algo, max_staleness=config.rollout.max_staleness),
            dtype=config.model.dtype,
            attn_implementation=config.model.attn_implementation,
            gradient_checkpointing=config.model.gradient_checkpointing,
            trust_remote_code=config.model.trust_remote_code,
            seed=config.seed,
            timeout_s=timeout_s,
        )

    # ------------------------------------------------------------------------------------------- plumbing

    @staticmethod
    def _resource_note(n: int, learner: LearnerConfig) -> str:
        avail = ray.available_resources()
        return (
            f"requested {n} ranks x {learner.num_cpus_per_rank:g} CPU, {learner.num_gpus_per_rank:g} GPU; available "
            f"now {avail.get('CPU', 0):g} CPU, {avail.get('GPU', 0):g} GPU; lower learner.num_cpus_per_rank / "
            "learner.num_gpus_per_rank / learner.num_ranks if the cluster cannot hold them"
        )

    @staticmethod
    def _check_resources(n: int, learner: LearnerConfig) -> None:
        total = ray.cluster_resources()
        for key, per_rank, field in (
            ("CPU", learner.num_cpus_per_rank, "num_cpus_per_rank"),
            ("GPU", learner.num_gpus_per_rank, "num_gpus_per_rank"),
        ):
            need = n * per_rank
            if need > total.get(key, 0) + 1e-9:
                raise ValueError(
                    f"learner: {n} ranks x learner.{field}={per_rank:g} = {need:g} {key} requested, the Ray cluster "
                    f"has {total.get(key, 0):g} {key}; lower learner.{field} or learner.num_ranks"
                )

    def _submit(self, method: str, *args: Any) -> list[tuple[str, Any]]:
        """Start `method(*args)` on every rank at once: [(rank name, ObjectRef | Future)]."""
        if self._local is not None:
            fut: Future = self._executor.submit(getattr(self._local, method), *args)
            return [(self.names[0], fut)]
        return [(name, getattr(w, method).remote(*args)) for name, w in zip(self.names, self.workers)]

    def _submit_rank0(self, method: str, *args: Any) -> tuple[str, Any]:
        if self._local is not None:
            return self.names[0], self._executor.submit(getattr(self._local, method), *args)
        return self.names[0], getattr(self.workers[0], method).remote(*args)

    def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> list[Any]:
        """`method(*args)` on every rank; the answers in rank order (in-process: on the group's one worker thread,
        the same thread weight-sync calls use, so model calls never overlap)."""
        if self._local is not None:
            return [self._executor.submit(getattr(self._local, method), *args).result()]
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        return wait_all(self._submit(method, *args), timeout_s=timeout, what=f"learner.{method}")

    def _put(self, batch: TrainBatch | None):
        """One object-store copy every rank reads (a ref passed as an argument is resolved in the worker)."""
        if batch is None or self._local is not None:
            return batch
        return ray.put(batch)

    # ------------------------------------------------------------------------------------------- public API

    def train_step(
        self, batch: TrainBatch, *, replay_batch: TrainBatch | None = None, sil_weight: float = 0.0, step: int
    ) -> dict[str, float]:
        """One learner step on every rank (LearnerCore.train_step); metrics merged over ranks."""
        per_rank = self._call("train_step", self._put(batch), self._put(replay_batch), float(sil_weight), int(step))
        return reduce_metrics(per_rank)

    def compute_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Log-probs of every response token of `batch` (rank shards concatenated in batch order).

        Shape:
            batch.input_ids (B, P + R) -> (B, R) float32, 0 off the loss mask.
        """
        return torch.cat(self._call("compute_logprobs", self._put(batch)), dim=0)

    def gradients(
        self, batch: TrainBatch, *, replay: bool = False, weight: float = 1.0, step: int = 0
    ) -> dict[str, torch.Tensor]:
        """The rank-averaged gradient of one mini-batch without a step (LearnerCore.gradients), from rank 0."""
        return self._call("gradients", self._put(batch), replay, weight, step)[0]

    def probe_logprobs(
        self, prompt_ids: list[int], response_ids: list[int], *, temperature: float | None = None
    ) -> list[float]:
        """Teacher-forced log-probs of the refit probe (every rank runs it: a collective under FSDP2)."""
        return self._call("probe_logprobs", list(prompt_ids), list(response_ids), temperature)[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full parameters on the CPU, from rank 0."""
        return self._call("state_dict")[0]

    def vocab_size(self) -> int:
        return self._call("vocab_size")[0]

    def save(self, path: str | Path) -> Path:
        """Write an HF-format checkpoint with optimizer state (every rank takes part; rank 0 writes)."""
        return Path(self._call("save", str(path))[0])

    def load(self, path: str | Path) -> int:
        """Restore a checkpoint on every rank; returns its step."""
        return self._call("load", str(path))[0]

    def ping(self) -> list[dict[str, Any]]:
        return self._call("ping", timeout_s=min(self.timeout_s, 30.0))

    def close(self) -> None:
        """Stop the rank actors this group started (in-process: nothing to stop)."""
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        self._executor.shutdown(wait=False)


__all__ = ["LearnerGroup", "LearnerWorker", "LearnerWorkerActor", "reduce_metrics"]
