"""The system of one run: every actor built from the config, and the pools the rollout coroutines draw on.

Parts: generators (`actors.generator`, in a placement group), env workers (`actors.env_worker`), the learner group
(`actors.learner`), the replay actor (`actors.replay`) and weight sync (`actors.weight_sync`). With
`ray.in_process=true` every part is the plain class in this process (one learner rank, weights copied directly), so
the whole loop can be debugged with a debugger and no Ray. `acall` hides the difference from the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.env_worker import EnvWorker, create_env_workers, wait_env_workers_ready
from actors.generator import Generator, create_generator
from actors.learner import LearnerGroup
from actors.replay import ReplayActor, create_replay_actor
from actors.weight_sync import WeightSync
from spear_ray.config import Config
from spear_ray.envs.host import NoEpisode
from spear_ray.generation import EngineOptions, GenerationOutput, SamplingParams
from spear_ray.weights.group import WeightSyncError

log = logging.getLogger(__name__)

# Failures of an actor process (the rollout re-runs the episode; the supervisor re-syncs a restarted generator).
ACTOR_FAILURES = (RayActorError,)


class EnvWorkerRestarted(RuntimeError):
    """The env worker restarted between two calls of one episode (its envs are new): the episode is re-run."""


# What makes the rollout re-run an episode from reset.
EPISODE_FAILURES = (*ACTOR_FAILURES, EnvWorkerRestarted)


async def acall(target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call `method` on a Ray actor handle (awaiting its ref) or on a plain in-process object."""
    fn = getattr(target, method)
    if isinstance(target, ray.actor.ActorHandle):
        return await fn.remote(*args, **kwargs)
    out = fn(*args, **kwargs)
    return await out if inspect.isawaitable(out) else out


class GeneratorPool:
    """Sends each request to the least-loaded live generator; a failed call marks its generator for re-sync."""

    def __init__(self, generators: list[Any], names: list[str]) -> None:
        self.generators = generators
        self.names = names
        self.load = [0] * len(generators)
        self.down: set[int] = set()  # died: excluded until the supervisor gave them the current weights
        self.failed = asyncio.Event()  # set when a generator is marked down (the supervisor waits on it)
        self._ready = asyncio.Event()
        self._ready.set()

    def _pick(self) -> int:
        live = [i for i in range(len(self.generators)) if i not in self.down]
        return min(live, key=lambda i: self.load[i])

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationOutput:
        while len(self.down) == len(self.generators):
            self._ready.clear()
            await self._ready.wait()
        i = self._pick()
        self.load[i] += 1
        try:
            return await acall(self.generators[i], "generate", prompt_ids, params)
        except ACTOR_FAILURES:
            self.mark_down({i})
            raise
        finally:
            self.load[i] -= 1

    def mark_down(self, indices: set[int]) -> None:
        self.down |= indices
        self.failed.set()

    def revive(self, indices: set[int]) -> None:
        self.down -= indices
        self._ready.set()


class EnvSession:
    """One env slot of one env worker, leased to one episode."""

    def __init__(self, worker: Any, slot: int) -> None:
        self.worker = worker
        self.slot = slot

    async def reset(self, seed: int) -> Any:
        return await acall(self.worker, "reset", self.slot, seed)

    async def step(self, text: str) -> Any:
        try:
            return await acall(self.worker, "step", self.slot, text)
        except NoEpisode as e:  # through Ray: a RayTaskError that is also a NoEpisode
            raise EnvWorkerRestarted(f"env slot {self.slot}: the worker restarted mid-episode ({e})") from e


class EnvPool:
    """Every (worker, slot) pair, leased one episode at a time (a full pool makes new episodes wait)."""

    def __init__(self, workers: list[Any], envs_per_worker: int) -> None:
        self._free: asyncio.Queue[EnvSession] = asyncio.Queue()
        for slot in range(envs_per_worker):  # interleave workers so load spreads
            for w in workers:
                self._free.put_nowait(EnvSession(w, slot))
        self.size = len(workers) * envs_per_worker

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[EnvSession]:
        session = await self._free.get()
        try:
            yield session
        finally:
            self._free.put_nowait(session)


def _engine_options(cfg: Config, *, policy_version: int, index: int) -> EngineOptions:
    g = cfg.generator
    backend_options = {}
    if g.backend == "vllm":
        backend_options = {
            "tensor_parallel_size": g.tensor_parallel_size,
            "gpu_memory_utilization": g.gpu_memory_utilization,
            "enforce_eager": g.enforce_eager,
        }
    return EngineOptions(
        dtype=cfg.model.dtype,
        device="cuda" if g.num_gpus > 0 else "cpu",
        attn_implementation=cfg.model.attn_implementation,
        trust_remote_code=cfg.model.trust_remote_code,
        max_batch_size=g.max_batch_size,
        batch_window_ms=g.batch_window_ms,
        max_model_len=g.max_model_len,
        seed=cfg.seed * 1000 + index,
        policy_version=policy_version,
        backend_options=backend_options,
    )


def _wait_placement_group(pg: Any, *, what: str, bundles: list[dict], timeout_s: float) -> None:
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except GetTimeoutError:
        avail = ray.available_resources()
        raise RuntimeError(
            f"{what}: placement group {bundles} could not be scheduled within {timeout_s:.0f} s; the cluster has "
            f"{avail.get('CPU', 0):g} CPU and {avail.get('GPU', 0):g} GPU free. Lower the per-actor resources "
            "(generator.num_cpus/num_gpus, generator.num_workers) or add nodes."
        ) from None


REPLAY_CPUS = 0.1


def eval_set_options(cfg: Config) -> dict[str, dict[str, Any]]:
    """The evaluation sets that get env workers of their own, name -> env options: "" (metrics eval/*) when
    env.eval_options is set (else the default evaluation shares the training workers), then every env.eval_sets
    entry, each merged over env.options and env.eval_options."""
    e = cfg.env
    sets = {"": {**e.options, **e.eval_options}} if e.eval_options else {}
    for name, options in e.eval_sets.items():
        sets[name] = {**e.options, **e.eval_options, **options}
    return sets


def required_resources(cfg: Config, *, training: bool = True) -> dict[str, dict[str, float]]:
    """CPU/GPU the run's actors ask Ray for, per part (what `check_resources` compares with the cluster)."""
    g, e, lr = cfg.generator, cfg.env, cfg.learner
    parts = {
        "generators (generator.num_workers x generator.num_cpus/num_gpus)": {
            "CPU": g.num_workers * g.num_cpus,
            "GPU": g.num_workers * g.num_gpus,
        },
        "env workers ((env.num_workers + env.eval_num_workers per own eval set) x env.num_cpus_per_worker)": {
            "CPU": (e.num_workers + len(eval_set_options(cfg)) * e.eval_num_workers) * e.num_cpus_per_worker,
            "GPU": 0.0,
        },
    }
    if training:
        parts["learner (learner.num_ranks x learner.num_cpus_per_rank/num_gpus_per_rank)"] = {
            "CPU": lr.num_ranks * lr.num_cpus_per_rank,
            "GPU": lr.num_ranks * lr.num_gpus_per_rank,
        }
        if cfg.algo.sil.enabled:
            parts["replay actor"] = {"CPU": REPLAY_CPUS, "GPU": 0.0}
    return parts


def check_resources(cfg: Config, cluster: dict[str, float], *, training: bool = True) -> None:
    """Fail before starting anything when the actors cannot all be scheduled (Ray would wait forever)."""
    parts = required_resources(cfg, training=training)
    for key in ("CPU", "GPU"):
        need = sum(p[key] for p in parts.values())
        have = cluster.get(key, 0.0)
        if need > have + 1e-9:
            detail = "; ".join(f"{name}: {p[key]:g}" for name, p in parts.items() if p[key])
            raise ValueError(
                f"the run asks Ray for {need:g} {key} but the cluster has {have:g} ({detail}); lower those "
                f"settings, or add {key}s (ray.num_cpus for a local Ray, more nodes on a cluster)"
            )


@dataclass
class System:
    """Handles to every component of a run."""

    cfg: Config
    generators: list[Any]
    generator_names: list[str]
    env_workers: list[Any]
    eval_env_workers: list[Any]
    learner: LearnerGroup | None  # None when built for evaluation only
    replay: Any | None
    weight_sync: WeightSync | None
    in_process: bool
    placement_groups: list[Any] = field(default_factory=list)
    eval_sets: dict[str, list[Any]] = field(default_factory=dict)  # env.eval_sets name -> its env workers

    def all_env_workers(self) -> list[Any]:
        """Every env worker once (the default evaluation may share the training workers)."""
        everyone = self.env_workers + self.eval_env_workers + [w for ws in self.eval_sets.values() for w in ws]
        return list({id(w): w for w in everyone}.values())

    @classmethod
    def build(
        cls, cfg: Config, model_path: str, *, policy_version: int, training: bool = True, start_timeout_s: float = 600.0
    ) -> System:
        """Start every component for `model_path` (weights at `policy_version`); `training=False` starts only the
        generators and env workers (evaluation)."""
        in_process = cfg.ray.in_process
        g, e = cfg.generator, cfg.env
        names = [f"generator-{i}" for i in range(g.num_workers)]
        env_kwargs = dict(
            num_envs=e.envs_per_worker,
            threads=e.threads_per_worker,
            history_length=e.history_length,
            max_turns=e.max_turns,
            step_timeout_s=e.step_timeout_s,
            granularity=None if e.granularity == "auto" else e.granularity,
        )
        pgs: list[Any] = []
        if not in_process:
            check_resources(cfg, ray.cluster_resources(), training=training)
        if in_process:
            generators = [
                Generator(
                    model_path, backend=g.backend, options=_engine_options(cfg, policy_version=policy_version, index=i)
                )
                for i in range(g.num_workers)
            ]
            env_workers = [
                EnvWorker(e.name, options=e.options, worker_index=i, **env_kwargs) for i in range(e.num_workers)
            ]
            own = {
                name: [EnvWorker(e.name, options=opts, worker_index=i, **env_kwargs) for i in range(e.eval_num_workers)]
                for name, opts in eval_set_options(cfg).items()
            }
        else:
            bundle = {"CPU": g.num_cpus, **({"GPU": g.num_gpus} if g.num_gpus else {}), **g.resources}
            bundles = [dict(bundle) for _ in range(g.num_workers)]
            pg = placement_group(bundles, strategy="PACK", name="spear-generators")
            pgs.append(pg)
            _wait_placement_group(pg, what="generators", bundles=bundles, timeout_s=start_timeout_s)
            generators = []
            for i in range(g.num_workers):
                generators.append(
                    create_generator(
                        model_path,
                        backend=g.backend,
                        options=_engine_options(cfg, policy_version=policy_version, index=i),
                        num_cpus=g.num_cpus,
                        num_gpus=g.num_gpus,
                        torch_threads=g.torch_threads,
                        max_restarts=g.max_restarts,
                        name=f"{cfg.ray.namespace}-{names[i]}",
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                    )
                )
            common = dict(num_cpus=e.num_cpus_per_worker, max_restarts=e.max_restarts, **env_kwargs)
            env_workers = create_env_workers(e.num_workers, name=e.name, options=e.options, **common)
            own = {
                name: create_env_workers(
                    e.eval_num_workers,
                    name=e.name,
                    options=opts,
                    actor_name_prefix=f"eval-{name}-env" if name else "eval-env",
                    **common,
                )
                for name, opts in eval_set_options(cfg).items()
            }
            wait_env_workers_ready(env_workers + [w for ws in own.values() for w in ws], timeout_s=start_timeout_s)
            ray.get([gen.health.remote() for gen in generators], timeout=start_timeout_s)
        eval_workers = own.pop("", env_workers)
        if not training:
            return cls(cfg, generators, names, env_workers, eval_workers, None, None, None, in_process, pgs, own)
        learner = LearnerGroup.from_config(
            model_path, cfg, num_workers=0 if in_process else None, timeout_s=start_timeout_s
        )
        replay = None
        if cfg.algo.sil.enabled:
            kwargs = dict(norm_by_std=cfg.algo.norm_adv_by_std, min_draw=learner.world_size, seed=cfg.seed)
            replay = (
                ReplayActor(cfg.algo.sil, **kwargs)
                if in_process
                else create_replay_actor(cfg.algo.sil, num_cpus=REPLAY_CPUS, **kwargs)
            )
        weight_sync = None
        if not in_process:
            weight_sync = WeightSync(
                learner,
                generators,
                config=cfg.weight_sync,
                names=names,
                backend=cfg.weight_sync.backend,
                device="cuda" if cfg.learner.num_gpus_per_rank > 0 else "cpu",
            )
            weight_sync.setup()
        return cls(
            cfg, generators, names, env_workers, eval_workers, learner, replay, weight_sync, in_process, pgs, own
        )

    # ------------------------------------------------------------------------------------------------ weights
    async def sync_weights(self, version: int) -> dict[str, float]:
        """Every generator serves `version` when this returns. The Ray path blocks in a thread, so rollout
        coroutines keep running on the event loop meanwhile."""
        if self.weight_sync is not None:
            return await asyncio.to_thread(self.weight_sync.sync, version)
        state = await asyncio.to_thread(self.learner.state_dict)
        for gen in self.generators:
            await gen.update_weights(state, version)
        return {"weight_sync/version": float(version)}

    # ----------------------------------------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Close envs and the sync group, kill actors, free placement groups (safe after partial failures)."""
        steps = []
        if self.weight_sync is not None:
            steps.append(self.weight_sync.close)
        if self.learner is not None:
            steps.append(self.learner.close)
        for w in self.all_env_workers():
            steps.append(
                lambda w=w: (
                    w.close() if not isinstance(w, ray.actor.ActorHandle) else ray.get(w.close.remote(), timeout=30)
                )
            )
        if not self.in_process:
            for a in [*self.generators, *self.all_env_workers(), *([self.replay] if self.replay is not None else [])]:
                steps.append(lambda a=a: ray.kill(a, no_restart=True))
            for pg in self.placement_groups:
                steps.append(lambda pg=pg: remove_placement_group(pg))
        for fn in steps:
            try:
                fn()
            except Exception as e:  # shutdown continues past a component that is already gone
                log.warning("shutdown step %s failed: %s", getattr(fn, "__name__", fn), e)


class Supervisor:
    """Brings restarted generators back before they serve again (Ray restarts the process with the initial weights):
    wait until it answers, push the current weights through the object store, rebuild the weight-sync group, then
    return it to the pool. Every weight sync goes through `sync`, which recovers a member that died mid-sync and
    retries once. Trajectories that were in flight on a dead actor are re-run by the rollout (never half-counted)."""

    def __init__(self, system: System, pool: GeneratorPool, *, restart_timeout_s: float = 300.0) -> None:
        self.system = system
        self.pool = pool
        self.restart_timeout_s = restart_timeout_s
        self.lock = asyncio.Lock()  # one weight movement at a time: a sync or a recovery
        self.version = 0  # the version every live generator serves
        self.restarts = 0

    async def _wait_alive(self, i: int) -> None:
        deadline = asyncio.get_running_loop().time() + self.restart_timeout_s
        while True:
            try:
                await asyncio.wait_for(acall(self.system.generators[i], "health"), timeout=10)
                return
            except (*ACTOR_FAILURES, asyncio.TimeoutError) as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"{self.system.generator_names[i]} did not come back within {self.restart_timeout_s:.0f} s "
                        f"after it died ({e}); raise generator.max_restarts or check the node's logs"
                    ) from e
                await asyncio.sleep(1.0)

    async def _recover(self, indices: set[int]) -> None:
        """Called with the lock held."""
        for i in sorted(indices):
            await self._wait_alive(i)
        state = await asyncio.to_thread(self.system.learner.state_dict)
        ref = ray.put(state) if not self.system.in_process else state
        for i in sorted(indices):
            await acall(self.system.generators[i], "update_weights", ref, self.version)
        if self.system.weight_sync is not None:
            await asyncio.to_thread(self.system.weight_sync.close)
            await asyncio.to_thread(self.system.weight_sync.setup)
        self.restarts += len(indices)
        self.pool.revive(indices)

    async def watch(self) -> None:
        """Background task: recover generators as soon as the pool reports them down."""
        while True:
            await self.pool.failed.wait()
            self.pool.failed.clear()
            async with self.lock:
                down = set(self.pool.down)
                if down:
                    await self._recover(down)

    async def _dead(self) -> set[int]:
        dead = set()
        for i, g in enumerate(self.system.generators):
            try:
                await asyncio.wait_for(acall(g, "weight_sync_ping"), timeout=10)
            except (*ACTOR_FAILURES, asyncio.TimeoutError):
                dead.add(i)
        return dead

    async def sync(self, version: int) -> dict[str, float]:
        """Every generator serves `version` when this returns."""
        async with self.lock:
            try:
                metrics = await self.system.sync_weights(version)
            except WeightSyncError:
                dead = await self._dead()
                if not dead:
                    raise
                self.pool.mark_down(dead)
                self.pool.failed.clear()
                await self._recover(dead)
                metrics = await self.system.sync_weights(version)
            self.version = version
        metrics["generator/restarts_total"] = float(self.restarts)
        return metrics
