"""Weight sync control plane: Ray calls decide who does what; the data plane is one dedicated process group.

`WeightSync` (driver side) creates the group (learner rank 0 = member 0, then every generator's workers in the
order the generators were given), broadcasts bucket after bucket from learner rank 0, collects one ack per
generator and only then bumps `version`; then runs the refit check. Every wait has a deadline; on a failure or a
timeout each member is probed over Ray with a short timeout and the error names the dead or silent one.
`WeightSyncReceiverMixin`: the methods a generator actor class includes (it needs `self._engine`).
Data plane: spear_ray/weights/{buckets,group,sync,endpoints}.py; refit: spear_ray/weights/refit.py.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actors.waiting import MemberError, MemberTimeout, probe, wait_all
from spear_ray.config import WeightSyncConfig
from spear_ray.weights.buckets import MIB, BucketPlan
from spear_ray.weights.endpoints import WeightReceiver, receiver_for
from spear_ray.weights.group import GroupAddress, WeightSyncError, resolve_backend
from spear_ray.weights.refit import probe_tokens, refit_report

if TYPE_CHECKING:
    from actors.learner import LearnerGroup

GRACE_S = 10.0  # Ray-level deadline beyond the collective timeout (the collective must fail first, by itself)


class WeightSyncReceiverMixin:
    """Weight-sync methods for a generator actor class whose engine is `self._engine` (all async: the actor's
    event loop keeps serving `generate` while buckets arrive)."""

    def _weight_receiver(self) -> WeightReceiver:
        receiver = getattr(self, "_ws_receiver", None)
        if receiver is None:
            receiver = self._ws_receiver = receiver_for(self._engine)
        return receiver

    async def weight_sync_info(self) -> dict[str, Any]:
        """{"workers", "dtype", "pid", "policy_version"}: what this generator adds to the group."""
        info = await self._weight_receiver().info()
        return {**info, "pid": os.getpid(), "policy_version": self._engine.policy_version}

    async def weight_sync_join(self, address: GroupAddress, rank: int) -> None:
        """Join the group as members rank .. rank + workers - 1 (returns once the whole group formed)."""
        await self._weight_receiver().join(address, rank)

    async def weight_sync_receive(self, plan: BucketPlan, version: int) -> dict[str, Any]:
        """Receive and load one sync; the ack carries the version now served."""
        return await self._weight_receiver().receive(plan, version)

    async def weight_sync_leave(self) -> None:
        await self._weight_receiver().leave()

    async def weight_sync_ping(self) -> dict[str, Any]:
        """Answered by the event loop even while a receive runs in a worker thread."""
        return {"pid": os.getpid(), "policy_version": self._engine.policy_version}


class WeightSync:
    """Driver-side weight sync from a LearnerGroup to generator actors (each with WeightSyncReceiverMixin).

    Args:
        learner: the learner group (rank 0 sends; under FSDP2 every rank helps gather).
        generators: generator actor handles, in the order that fixes their group ranks.
        config: bucket_mb, timeout_s, refit_check, refit_tolerance, refit_fail.
        names: a readable name per generator (default "generator-<i>"), used in every error.
        backend: "auto" (nccl when the learner trains on CUDA, else gloo), "gloo" or "nccl".
        device: the learner's device ("cpu" or "cuda"), for `backend="auto"`.
        probe_timeout_s: how long a member may take to answer a liveness probe after a failure.
        grace_s: how much longer than the collective timeout a Ray call may take before it counts as hung (the
            collective should fail first, by itself).
        host: the rendezvous address the members connect to; None = learner rank 0's node address (127.0.0.1 on one
            machine, its node IP on a multi-node cluster).
    """

    def __init__(
        self,
        learner: LearnerGroup,
        generators: Sequence[Any],
        *,
        config: WeightSyncConfig,
        names: Sequence[str] | None = None,
        backend: str = "auto",
        device: str = "cpu",
        probe_timeout_s: float = 5.0,
        grace_s: float = GRACE_S,
        host: str | None = None,
    ) -> None:
        if not generators:
            raise ValueError("WeightSync needs at least one generator")
        self.learner = learner
        self.generators = list(generators)
        self.names = list(names) if names is not None else [f"generator-{i}" for i in range(len(generators))]
        if len(self.names) != len(self.generators):
            raise ValueError(f"names has {len(self.names)} entries for {len(self.generators)} generators")
        self.config = config
        self.backend = resolve_backend(backend, device=device)
        self.probe_timeout_s = probe_timeout_s
        self.grace_s = grace_s
        self.host = host
        self.address: GroupAddress | None = None
        self.plan: BucketPlan | None = None
        self.version: int | None = None  # the last version every generator acknowledged
        self._pids: list[int] = []
        self._probe: tuple[list[int], list[int]] | None = None

    # ------------------------------------------------------------------------------------------- failures

    def _members(self) -> list[tuple[str, Any]]:
        learners = [(n, (lambda i=i: self.learner.workers[i].ping.remote())) for i, n in enumerate(self.learner.names)]
        if self.learner.workers == []:
            learners = [(self.learner.names[0], lambda: "in-process")]
        gens = [(n, (lambda g=g: g.weight_sync_ping.remote())) for n, g in zip(self.names, self.generators)]
        return learners + gens

    def _fail(self, what: str, err: Exception) -> WeightSyncError:
        """Probe every member and build the error that names the dead, restarted or silent ones."""
        states = probe(self._members(), timeout_s=self.probe_timeout_s)
        for i, name in enumerate(self.names):
            state, answer = states[name]
            if state == "alive" and self._pids and isinstance(answer, dict) and answer.get("pid") != self._pids[i]:
                states[name] = ("restarted", f"was pid {self._pids[i]}, now pid {answer.get('pid')}: it left the group")
        bad = [f"{n} is {s} ({d})" for n, (s, d) in states.items() if s != "alive"]
        culprit = "; ".join(bad) if bad else "every member answers the probe (a collective timed out)"
        self._teardown(alive={n for n, (s, _) in states.items() if s == "alive"})
        return WeightSyncError(
            f"{what} failed: {culprit}. First error: {err}. The group was torn down; call setup() again once the "
            f"members are healthy (weight_sync.timeout_s={self.config.timeout_s:g})"
        )

    def _wait(self, calls: list[tuple[str, Any]], *, what: str, timeout_s: float) -> list[Any]:
        try:
            return wait_all(calls, timeout_s=timeout_s, what=what)
        except (MemberError, MemberTimeout) as e:
            raise self._fail(what, e) from e

    def _teardown(self, *, alive: set[str] | None = None) -> None:
        """Members leave the group (dead ones are skipped); waits at most probe_timeout_s."""
        calls = []
        if alive is None or self.learner.names[0] in alive:
            calls.append(self.learner._submit_rank0("weight_sync_leave"))
        calls += [
            (n, g.weight_sync_leave.remote())
            for n, g in zip(self.names, self.generators)
            if alive is None or n in alive
        ]
        if alive is None:  # a normal close: a member that cannot leave is an error
            wait_all(calls, timeout_s=self.probe_timeout_s + self.grace_s, what="weight-sync teardown")
        else:  # after a failure the error that caused the teardown is the one raised
            with contextlib.suppress(MemberError, MemberTimeout):
                wait_all(calls, timeout_s=self.probe_timeout_s, what="weight-sync teardown")
        self.address = None
        self.plan = None

    # ------------------------------------------------------------------------------------------- public API

    def setup(self) -> GroupAddress:
        """Create the group: learner rank 0 = member 0, then each generator's workers in the given order."""
        timeout = self.config.timeout_s
        infos = self._wait(
            [(n, g.weight_sync_info.remote()) for n, g in zip(self.names, self.generators)],
            what="weight-sync setup (generator info)",
            timeout_s=timeout + self.grace_s,
        )
        dtypes = {i["dtype"] for i in infos}
        if len(dtypes) != 1:
            raise ValueError(f"generators run different dtypes {sorted(dtypes)}; give every generator the same dtype")
        self._pids = [int(i["pid"]) for i in infos]
        members, offsets = [self.learner.names[0]], []
        for name, info in zip(self.names, infos):
            offsets.append(len(members))
            k = int(info["workers"])
            members += [name] if k == 1 else [f"{name}/worker-{j}" for j in range(k)]
        ((rank0_host, port),) = self._wait(
            [self.learner._submit_rank0("weight_sync_open", len(members), timeout)],
            what="weight-sync setup (open rendezvous)",
            timeout_s=timeout + self.grace_s,
        )
        address = GroupAddress(
            host=self.host or rank0_host,
            port=int(port),
            world_size=len(members),
            backend=self.backend,
            timeout_s=timeout,
            name=f"ws-{uuid.uuid4().hex[:8]}",
            members=tuple(members),
        )
        calls = [self.learner._submit_rank0("weight_sync_join", address)]
        calls += [
            (n, g.weight_sync_join.remote(address, off)) for n, g, off in zip(self.names, self.generators, offsets)
        ]
        self._wait(calls, what=f"weight-sync group creation ({len(members)} members)", timeout_s=timeout + self.grace_s)
        bucket_bytes = max(int(self.config.bucket_mb * MIB), 1)
        plans = self._wait(
            self.learner._submit("weight_sync_plan", bucket_bytes, dtypes.pop()),
            what="weight-sync bucket plan",
            timeout_s=timeout + self.grace_s,
        )
        self.address, self.plan = address, plans[0]
        return address

    def sync(self, version: int) -> dict[str, float]:
        """Broadcast the learner's weights as `version`; returns weight_sync/* metrics.

        The version is bumped only after every generator acknowledged it; then the refit check runs.
        """
        if self.version is not None and version <= self.version:
            raise ValueError(f"sync(version={version}) must exceed the last synced version {self.version}")
        if self.plan is None:
            self.setup()
        calls = self.learner._submit("weight_sync_send")
        calls += [(n, g.weight_sync_receive.remote(self.plan, version)) for n, g in zip(self.names, self.generators)]
        results = self._wait(
            calls, what=f"weight sync to version {version}", timeout_s=self.config.timeout_s + self.grace_s
        )
        sent, acks = results[0], results[len(calls) - len(self.generators) :]
        stale = {n: a["version"] for n, a in zip(self.names, acks) if a["version"] != version}
        if stale:
            raise WeightSyncError(f"weight sync to version {version}: generators acknowledged other versions {stale}")
        self.version = version
        metrics = {**sent, "weight_sync/version": float(version)}
        metrics["weight_sync/generator_load_s_max"] = max(float(a["seconds"]) for a in acks)
        if self.config.refit_check:
            metrics.update(self.refit_check(version))
        return metrics

    def refit_check(self, version: int) -> dict[str, float]:
        """Learner vs generator log-probs on the fixed probe (`weight_sync/refit_max_abs_diff`)."""
        if self._probe is None:
            self._probe = probe_tokens(self.learner.vocab_size())
        prompt, response = self._probe
        # T = 1: weights alone decide the log-probs (and vLLM scores teacher-forced tokens at T = 1 only)
        temperature = 1.0
        ref = self.learner.probe_logprobs(prompt, response, temperature=temperature)
        got = self._wait(
            [
                (n, g.compute_logprobs.remote(prompt, response, temperature=temperature))
                for n, g in zip(self.names, self.generators)
            ],
            what="refit check",
            timeout_s=self.config.timeout_s + self.grace_s,
        )
        return refit_report(
            ref,
            dict(zip(self.names, got)),
            tolerance=self.config.refit_tolerance,
            fail=self.config.refit_fail,
            version=version,
        )

    def close(self) -> None:
        """Every member leaves the group."""
        if self.address is not None:
            self._teardown()


__all__ = ["WeightSync", "WeightSyncReceiverMixin"]
