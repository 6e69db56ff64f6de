"""The controller of `spear-ray train`: build everything from the config, run the asynchronous loop, log, checkpoint,
resume. Reads top to bottom: setup -> run -> cleanup.

One learner step (SPEAR_SPEC 2.1, Part A D4-D6): wait for the step's batch slot of groups (rolled out ahead under
the staleness bound) -> scores, filters, advantages -> draw the SIL batch -> PPO/Clip-Cov update then the weighted
SIL update -> insert the positive-advantage samples -> broadcast weights and bump the version -> metrics, eval,
checkpoint. Rollouts never stop for the learner: they run as coroutines on the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from actors.controller import ACTOR_FAILURES, EPISODE_FAILURES, EnvPool, GeneratorPool, Supervisor, System, acall
from actors.waiting import MemberError, MemberTimeout
from spear_ray.algo.schedules import sil_weight, tool_call_decay
from spear_ray.config import Config, ConfigError, load_config
from spear_ray.data import Trajectory, collate, from_ipc, samples_from_trajectories, set_columns, to_ipc
from spear_ray.generation import SamplingParams
from spear_ray.models import load_tokenizer, make_tiny_model
from spear_ray.prepare import prepare_on_policy
from spear_ray.rollout.chat import ChatCodec
from spear_ray.rollout.episode import EpisodeSettings, run_episode
from spear_ray.rollout.scheduler import RolloutScheduler, task_seed
from spear_ray.telemetry import MetricsLogger, timer
from spear_ray.warmstart import warm_start

CHECKPOINTS = "checkpoints"
LEARNER_FAILURES = (*ACTOR_FAILURES, MemberError, MemberTimeout)
STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class TrainState:
    """Counters a checkpoint restores besides weights, optimizer and replay."""

    step: int = 0  # last completed learner step (= the policy version the generators serve)
    groups: int = 0  # groups trained on
    trajectories: int = 0  # trajectories trained on (failed ones excluded)
    failed: int = 0  # trajectories that failed (env errors) in trained groups
    tokens: int = 0  # generated tokens in trained groups
    episode_retries: int = 0  # episodes re-run after an actor died

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"version": STATE_VERSION, **asdict(self)}, indent=1))

    @classmethod
    def load(cls, path: Path) -> TrainState:
        data = json.loads(path.read_text())
        if data.pop("version", None) != STATE_VERSION:
            raise ValueError(f"{path} was written by an incompatible spear-ray (state version {STATE_VERSION})")
        return cls(**data)


# ------------------------------------------------------------------------------------------------------- setup
def prepare_model(cfg: Config, run_dir: Path) -> str:
    """The initial weights: a hub name or folder as given, or the tiny model built and warm-started once per run."""
    if cfg.model.path != "tiny":
        return cfg.model.path
    out = run_dir / "init_model"
    if (out / "config.json").is_file():
        return str(out)
    t = cfg.model.tiny
    base = make_tiny_model(
        run_dir / "tiny_base",
        hidden_size=t.hidden_size,
        num_layers=t.num_layers,
        num_heads=t.num_heads,
        num_kv_heads=t.num_kv_heads,
        intermediate_size=t.intermediate_size,
        seed=cfg.seed,
        overwrite=True,
    )
    if not cfg.model.warm_start.enabled:
        shutil.copytree(base, out)
        return str(out)
    tmp = run_dir / "init_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    metrics = warm_start(base, tmp, cfg=cfg)
    (tmp / "warm_start.json").write_text(json.dumps(metrics, indent=1))
    tmp.rename(out)
    shutil.rmtree(base, ignore_errors=True)
    return str(out)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(p for p in (run_dir / CHECKPOINTS).glob("step_*") if (p / STATE_FILE).is_file())
    return ckpts[-1] if ckpts else None


def start_ray(cfg: Config) -> bool:
    """Connect to (or start) Ray; returns whether this process started it (and must shut it down)."""
    if cfg.ray.in_process or ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"namespace": cfg.ray.namespace, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
        return True
    ray.init(
        num_cpus=cfg.ray.num_cpus,
        object_store_memory=cfg.ray.object_store_memory_mb * 1024**2 if cfg.ray.object_store_memory_mb else None,
        include_dashboard=cfg.ray.include_dashboard,
        dashboard_host=cfg.ray.dashboard_host,
        **kwargs,
    )
    return True


def episode_settings(cfg: Config, *, max_turns: int, eval: bool) -> EpisodeSettings:
    """How one episode samples and where it stops: training uses `rollout.*` (T, top_p, top_k); evaluation uses
    `eval.temperature`, `eval.top_p`, `eval.top_k` with the same budgets and its own sampling seed."""
    r = cfg.rollout
    if eval:
        e = cfg.eval
        temperature, top_p, top_k, seed = e.temperature, e.top_p, e.top_k, cfg.seed + 1
    else:
        temperature, top_p, top_k, seed = r.temperature, r.top_p, r.top_k, cfg.seed
    return EpisodeSettings(
        granularity=cfg.resolved_granularity(),
        max_turns=max_turns,
        params=SamplingParams(
            temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=r.max_new_tokens, stop=tuple(r.stop)
        ),
        max_prompt_tokens=r.max_prompt_tokens,
        max_response_tokens=r.max_response_tokens,
        sample_seed=seed,
    )


# -------------------------------------------------------------------------------------------------------- run
class Trainer:
    """The asynchronous loop of one run (setup is done; `run` trains until `cfg.steps`)."""

    def __init__(
        self, cfg: Config, system: System, state: TrainState, logger: MetricsLogger, run_dir: Path, codec: ChatCodec
    ) -> None:
        self.cfg = cfg
        self.system = system
        self.state = state
        self.logger = logger
        self.run_dir = run_dir
        self.codec = codec
        self.pad_id = codec.tokenizer.pad_token_id if codec.tokenizer.pad_token_id is not None else codec.eos_id
        self.gens = GeneratorPool(system.generators, system.generator_names)
        self.envs = EnvPool(system.env_workers, cfg.env.envs_per_worker)
        shared = system.eval_env_workers is system.env_workers
        eval_envs = self.envs if shared else EnvPool(system.eval_env_workers, cfg.env.envs_per_worker)
        # metric prefix -> the env workers of that evaluation set (env.eval_options, then env.eval_sets)
        self.eval_pools = {"eval": eval_envs}
        for name, workers in system.eval_sets.items():
            self.eval_pools[f"eval_{name}"] = EnvPool(workers, cfg.env.envs_per_worker)
        max_turns = cfg.env.max_turns or _env_default_turns(cfg)
        self.train_settings = episode_settings(cfg, max_turns=max_turns, eval=False)
        self.eval_settings = episode_settings(cfg, max_turns=max_turns, eval=True)
        self.supervisor = Supervisor(system, self.gens)
        self.supervisor.version = state.step

    # ------------------------------------------------------------------------------------------- rollouts
    async def _episode(
        self, pool: EnvPool, settings: EpisodeSettings, *, group_id: int, traj_id: int, seed: int, eval: bool
    ) -> Trajectory:
        """One episode; re-run from reset when a generator or env worker died (or restarted) under it, so a trajectory
        is never half-counted."""
        for attempt in range(self.cfg.rollout.max_episode_retries + 1):
            async with pool.lease() as env:
                try:
                    return await run_episode(
                        group_id=group_id,
                        traj_id=traj_id,
                        seed=seed,
                        env=env,
                        generator=self.gens,
                        codec=self.codec,
                        settings=settings,
                        eval=eval,
                    )
                except EPISODE_FAILURES:
                    if attempt == self.cfg.rollout.max_episode_retries:
                        raise
                    self.state.episode_retries += 1
        raise AssertionError("unreachable: the loop returns or raises")

    async def run_group(self, k: int) -> list[Trajectory]:
        """Group k: `group_size` rollouts of one task seed, each its own coroutine."""
        n = self.cfg.env.group_size
        seed = task_seed(self.cfg.seed, k, limit=self.cfg.env.seed_offset_eval)
        return list(
            await asyncio.gather(
                *(
                    self._episode(self.envs, self.train_settings, group_id=k, traj_id=k * n + j, seed=seed, eval=False)
                    for j in range(n)
                )
            )
        )

    async def evaluate(self, step: int) -> dict[str, float]:
        """One rollout per held-out task seed at the evaluation sampling settings, with the weights of `step`, on
        every evaluation set at once (eval/* and one eval_<name>/* per env.eval_sets entry)."""
        n = self.cfg.eval.num_tasks

        async def one_set(pool: EnvPool) -> list[Trajectory]:
            return list(
                await asyncio.gather(
                    *(
                        self._episode(
                            pool,
                            self.eval_settings,
                            group_id=-1 - i,
                            traj_id=-1 - i,
                            seed=self.cfg.env.seed_offset_eval + i,
                            eval=True,
                        )
                        for i in range(n)
                    )
                )
            )

        results = await asyncio.gather(*(one_set(pool) for pool in self.eval_pools.values()))
        metrics: dict[str, float] = {}
        for prefix, trajs in zip(self.eval_pools, results):
            metrics.update({f"{prefix}/{k}": v for k, v in episode_stats(trajs).items()})
        return metrics

    # ------------------------------------------------------------------------------------------ one step
    async def learner_step(self, step: int, groups: list[list[Trajectory]], metrics: dict[str, float]) -> list[int]:
        """Train on one batch slot; updates `metrics` and returns the per-sample staleness."""
        cfg, system = self.cfg, self.system
        trajs = [t for g in groups for t in g]
        with timer(metrics, "time/prepare"):
            samples = samples_from_trajectories(trajs)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0]))
            prepared = prepare_on_policy(
                samples,
                algo=cfg.algo,
                step=step,
                generator=gen,
                max_response_len=cfg.response_limit()[1],
            )
            batch = collate(prepared.samples, pad_token_id=self.pad_id)
        metrics.update(prepared.metrics)
        rollout, staleness = rollout_metrics(trajs, prepared.samples, trained_version=step - 1)
        metrics.update(rollout)
        if batch.batch_size == 0:  # every trajectory failed or was filtered: nothing to learn from this step
            metrics["learner/skipped_steps"] = 1.0
            return staleness
        with timer(metrics, "time/learner"):
            drawn = await acall(system.replay, "draw", step) if system.replay is not None else None
            replay_batch = collate(from_ipc(drawn), pad_token_id=self.pad_id) if drawn is not None else None
            w = sil_weight(step, coef=cfg.algo.sil.coef, warmup_steps=cfg.algo.sil.warmup_steps)
            old = await asyncio.to_thread(system.learner.compute_logprobs, batch)  # pi_old at the start (D6)
            batch.old_logprobs = old  # reused by train_step and stored with the replay samples
            metrics.update(
                await asyncio.to_thread(
                    system.learner.train_step,
                    batch,
                    replay_batch=replay_batch,
                    sil_weight=w if cfg.algo.sil.enabled else 0.0,
                    step=step,
                )
            )
        metrics["sil/weight"] = w if cfg.algo.sil.enabled else 0.0
        metrics["sil/samples"] = float(replay_batch.batch_size) if replay_batch is not None else 0.0
        if system.replay is not None:
            lengths = prepared.samples.column("response_ids").combine_chunks().value_lengths().to_pylist()
            rows = [old[i, :n].tolist() for i, n in enumerate(lengths)]
            stored = set_columns(prepared.samples, old_logprobs=rows)
            metrics.update(await acall(system.replay, "insert", to_ipc(stored), step))
        return staleness

    async def run(self) -> None:
        cfg, state = self.cfg, self.state
        gps = cfg.env.groups_per_step
        sched = RolloutScheduler(
            self.run_group,
            groups_per_step=gps,
            max_staleness=cfg.rollout.max_staleness,
            version=state.step,
            max_groups=cfg.steps * gps,
        )
        sched.start()
        watcher = asyncio.create_task(self.supervisor.watch(), name="generator-supervisor")
        try:
            if cfg.eval.at_start and state.step == 0 and cfg.eval.num_tasks:
                m: dict[str, float] = {}
                with timer(m, "time/eval"):
                    m.update(await self.evaluate(0))
                self.logger.log(0, m)
            for step in range(state.step + 1, cfg.steps + 1):
                metrics: dict[str, float] = {}
                t0 = time.perf_counter()
                with timer(metrics, "time/rollout_wait"):
                    groups = await sched.batch(step - 1)
                try:
                    staleness = await self.learner_step(step, groups, metrics)
                except LEARNER_FAILURES as e:
                    last = latest_checkpoint(self.run_dir)
                    raise RuntimeError(
                        f"the learner group failed at step {step}: {e}. The run stops here; its last checkpoint is "
                        f"{last or 'none yet'}. Continue with: spear-ray train --resume {self.run_dir}"
                    ) from e
                with timer(metrics, "time/weight_sync"):
                    metrics.update(await self.supervisor.sync(step))
                await sched.set_version(step)
                self._count(groups)
                state.step = step
                metrics["algo/tool_bonus_decay"] = (
                    tool_call_decay(step, decay_steps=cfg.algo.tool_bonus.decay_steps)
                    if cfg.algo.tool_bonus.mode == "cosine"
                    else float(cfg.algo.tool_bonus.mode == "constant")
                )
                if cfg.eval.num_tasks and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps):
                    with timer(metrics, "time/eval"):
                        metrics.update(await self.evaluate(step))
                elapsed = time.perf_counter() - t0
                metrics["time/step"] = elapsed
                metrics["throughput/trajectories_per_s"] = metrics.get("rollout/trajectories", 0.0) / max(elapsed, 1e-9)
                metrics["throughput/tokens_per_s"] = metrics.get("rollout/tokens", 0.0) / max(elapsed, 1e-9)
                # log before checkpointing: a kill in between only repeats steps after the last checkpoint on resume
                self.logger.log(step, metrics)
                self.logger.log_histogram("rollout/staleness", staleness, step=step)
                if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or step == cfg.steps:
                    await self.checkpoint(step)
        finally:
            watcher.cancel()
            await sched.stop()

    def _count(self, groups: list[list[Trajectory]]) -> None:
        for g in groups:
            self.state.groups += 1
            for t in g:
                self.state.failed += int(t.failed)
                self.state.trajectories += int(not t.failed)
                self.state.tokens += t.num_generated_tokens

    async def checkpoint(self, step: int) -> Path:
        """Atomically write weights (HF format), optimizer, replay snapshot, counters and the config."""
        root = self.run_dir / CHECKPOINTS
        final = root / f"step_{step:06d}"
        tmp = root / f".tmp_step_{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        await asyncio.to_thread(self.system.learner.save, tmp / "learner")
        if self.system.replay is not None:
            await acall(self.system.replay, "save", str(tmp / "replay"))
        self.cfg.save(tmp / "config.yaml")
        self.state.save(tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(p for p in root.glob("step_*"))[: -self.cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final


# ---------------------------------------------------------------------------------------------- statistics
def episode_stats(trajs: list[Trajectory]) -> dict[str, float]:
    ok = [t for t in trajs if not t.failed]
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    return {
        "success_rate": mean([float(t.success) for t in ok]),
        "episode_reward_mean": mean([t.episode_reward for t in ok]),
        "episode_length_mean": mean([t.length for t in ok]),
        "tool_calls_mean": mean([t.num_tool_calls for t in ok]),
    }


def rollout_metrics(
    trajs: list[Trajectory], samples: pa.Table, *, trained_version: int
) -> tuple[dict[str, float], list[int]]:
    """`rollout/*` of one step's trajectories; staleness = trained version - oldest token version per sample."""
    stale = []
    for versions in samples.column("policy_versions").to_pylist():
        real = [v for v in versions if v >= 0]
        if real:
            stale.append(trained_version - min(real))
    out = {f"rollout/{k}": v for k, v in episode_stats(trajs).items()}
    out["rollout/trajectories"] = float(sum(not t.failed for t in trajs))
    out["rollout/failed"] = float(sum(t.failed for t in trajs))
    out["rollout/tokens"] = float(sum(t.num_generated_tokens for t in trajs))
    out["rollout/staleness_max"] = float(max(stale, default=0))
    out["rollout/staleness_mean"] = float(np.mean(stale)) if stale else 0.0
    return out, stale


def _env_default_turns(cfg: Config) -> int:
    from spear_ray import envs

    return envs.get_class(cfg.env.name).default_max_turns


# ------------------------------------------------------------------------------------------- entry points
def run(cfg: Config, run_dir: str | Path, *, resume: bool = False) -> Path:
    """Train `cfg` in `run_dir` (resume: from its latest checkpoint). Returns the run directory."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state, ckpt = TrainState(), None
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise ConfigError(
                f"--resume {run_dir}: no checkpoint under {run_dir / CHECKPOINTS} to resume from (the run stopped "
                "before its first checkpoint; start it again without --resume, or set checkpoint.every lower)"
            )
        state = TrainState.load(ckpt / STATE_FILE)
    cfg.save(run_dir / "config.yaml")
    started_ray = start_ray(cfg)
    system = None
    logger = MetricsLogger(
        run_dir,
        logging=cfg.logging,
        config=cfg.model_dump(mode="json"),
        resume=resume,
        total_steps=cfg.steps,
        start_step=state.step,
    )
    try:
        model_path = str(ckpt / "learner") if ckpt else prepare_model(cfg, run_dir)
        system = System.build(cfg, model_path, policy_version=state.step)
        if ckpt is not None:
            system.learner.load(ckpt / "learner")
            if system.replay is not None:
                asyncio.run(acall(system.replay, "load", str(ckpt / "replay")))
        codec = ChatCodec(load_tokenizer(model_path))
        trainer = Trainer(cfg, system, state, logger, run_dir, codec)
        asyncio.run(trainer.run())
    finally:
        if system is not None:
            system.shutdown()
        logger.close()
        if started_ray:
            ray.shutdown()
    from spear_ray.report import write_report

    png, html = write_report(run_dir)
    print(f"run directory: {run_dir}\nreport: {html}\nreport: {png}")
    return run_dir


def evaluate_checkpoint(
    checkpoint: str | Path, *, overrides: list[str] = (), num_tasks: int | None = None, out: str | Path | None = None
) -> dict[str, float]:
    """Evaluate a checkpoint folder (`RUN_DIR/checkpoints/step_N`) on held-out task seeds."""
    ckpt = Path(checkpoint)
    if not (ckpt / "config.yaml").is_file() or not (ckpt / "learner" / "config.json").is_file():
        raise FileNotFoundError(f"--checkpoint {ckpt} is not a spear-ray checkpoint (needs config.yaml and learner/)")
    cfg = load_config(ckpt / "config.yaml", list(overrides) + ([f"eval.num_tasks={num_tasks}"] if num_tasks else []))
    state = TrainState.load(ckpt / STATE_FILE)
    started = start_ray(cfg)
    model_path = str(ckpt / "learner")
    system = System.build(cfg, model_path, policy_version=state.step, training=False)
    try:
        trainer = Trainer(cfg, system, state, _NullLogger(), ckpt, ChatCodec(load_tokenizer(model_path)))
        metrics = asyncio.run(trainer.evaluate(state.step))
    finally:
        system.shutdown()
        if started:
            ray.shutdown()
    path = Path(out) if out else ckpt / "eval.json"
    path.write_text(json.dumps({"step": state.step, **metrics}, indent=1))
    print(json.dumps(metrics, indent=1))
    return metrics


class _NullLogger:
    def log(self, *a: Any, **k: Any) -> None: ...
    def log_histogram(self, *a: Any, **k: Any) -> None: ...
