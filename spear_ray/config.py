"""Typed run configuration: pydantic v2 models (extra keys forbidden, bounds and a docstring on every field).

Loading = field defaults (the tiny CPU SPEAR run) < `algo.preset` < YAML file < dotted command-line overrides
(OmegaConf dotlist) -> one validation with cross-field checks -> the resolved config saved in the run directory.
A bad key or value fails here, before anything starts, with a message naming the key, the value and the fix.

    cfg = load_config("configs/sokoban/spear_grpo.yaml", ["algo.clip_high=0.3", "learner.lr=1e-5"])
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spear_ray.presets import CPU_DEFAULT, PRESETS, deep_merge, preset_algo

LossAgg = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key, the value and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


# ---------------------------------------------------------------------------------------------------------- model
class TinyModelConfig(_Section):
    hidden_size: int = Field(128, ge=8, le=8192)
    """Hidden width of the tiny Qwen2-style model built when model.path='tiny'."""
    num_layers: int = Field(2, ge=1, le=64)
    """Transformer layers of the tiny model."""
    num_heads: int = Field(4, ge=1, le=128)
    """Attention heads of the tiny model (must divide hidden_size)."""
    num_kv_heads: int = Field(2, ge=1, le=128)
    """Key/value heads of the tiny model (must divide num_heads)."""
    intermediate_size: int = Field(256, ge=8)
    """MLP width of the tiny model."""


class WarmStartConfig(_Section):
    enabled: bool = True
    """Supervised warm start of model.path='tiny' on format-correct episodes with random actions (a real instruct
    model knows the format but not the strategy). Ignored for other models."""
    skill_steps: int = Field(1500, ge=0, le=100_000)
    """Tool envs (trajectory granularity): most steps of the first phase, on tool-using demos only, which teaches
    copying the question into the call and the result into the answer (an induction-style skill that forms suddenly
    after a few hundred steps). 0 skips the phase."""
    skill_loss: float = Field(0.05, gt=0)
    """The first phase ends when its smoothed loss falls below this (the copy skill has formed)."""
    steps: int = Field(200, ge=0, le=100_000)
    """Steps of the main phase on the env's demos (tool envs: the tool_prob mix that sets the tool-call rate)."""
    batch_size: int = Field(16, ge=1, le=4096)
    """Episodes per warm-start step."""
    lr: float = Field(1e-3, gt=0, le=1.0)
    """Warm-start learning rate (AdamW). 3e-3 never forms the copy skill on the tiny model (measured)."""
    loss_on: Literal["all", "assistant"] = "assistant"
    """Tokens the warm-start loss counts: every token, or only the assistant's (what the policy must produce)."""
    tool_prob: float = Field(0.3, ge=0, le=1)
    """Tool envs: share of main-phase demos that call the tool (and copy its result); the rest guess."""


class ModelConfig(_Section):
    path: str = "tiny"
    """A local Hugging Face folder, a hub name (e.g. Qwen/Qwen2.5-1.5B-Instruct), or 'tiny' to build the tiny model
    (and its warm start) in the run directory."""
    tokenizer_path: str | None = None
    """Tokenizer folder or hub name when it differs from model.path."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype for the learner and HF generators ('auto' = the checkpoint's)."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel; flash_attention_2 only when flash-attn is installed."""
    trust_remote_code: bool = False
    """Allow model code from the hub (only for models you trust)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    """Architecture of model.path='tiny'."""
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    """Warm start of model.path='tiny'."""


# ------------------------------------------------------------------------------------------------------------ env
class EnvConfig(_Section):
    name: str = "calculator"
    """Registered env name (sokoban, calculator, math, alfworld, textworld, webshop) or 'pkg.module:Class'."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the env class (e.g. {dim_room: [6, 6], num_boxes: 1})."""
    eval_options: dict[str, Any] = Field(default_factory=dict)
    """Options merged over env.options for evaluation envs (e.g. {split: valid_seen}); metrics eval/*. Empty:
    evaluation runs on the training env workers."""
    eval_sets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """More evaluation sets, evaluated at the same steps with eval.num_tasks seeds each: name -> options merged over
    env.options and env.eval_options (e.g. {aime25: {data: yentinglin/aime_2025}}); metrics eval_<name>/*."""
    eval_num_workers: int = Field(1, ge=1, le=10_000)
    """Env workers of each evaluation set that has its own options (env.eval_options, each env.eval_sets entry)."""
    granularity: Literal["auto", "step", "trajectory"] = "auto"
    """Sample granularity (SPEAR_SPEC D1); 'auto' takes the env class's own."""
    max_turns: int | None = Field(None, ge=1, le=1000)
    """Turns per episode (ALFWorld 50, WebShop 15, math 8); None = the env's default."""
    history_length: int = Field(2, ge=0, le=100)
    """Step mode: (observation, action) pairs shown in each prompt (SPEAR_SPEC 8.2)."""
    group_size: int = Field(8, ge=1, le=1024)
    """Rollouts per task seed (n of GRPO; env.rollout.n = 8 in the paper)."""
    groups_per_step: int = Field(8, ge=1, le=100_000)
    """Groups per learner step (train_batch_size = 32 in the paper)."""
    num_workers: int = Field(1, ge=1, le=10_000)
    """Env worker actors."""
    envs_per_worker: int = Field(64, ge=1, le=100_000)
    """Env instances each worker hosts (K); worker threads step them."""
    threads_per_worker: int = Field(4, ge=1, le=1024)
    """Thread pool size of each env worker."""
    num_cpus_per_worker: float = Field(0.1, ge=0, le=1024)
    """Ray CPUs each env worker asks for (fractional is fine)."""
    max_restarts: int = Field(3, ge=-1, le=1000)
    """Ray restarts of a dead env worker (-1 = forever)."""
    step_timeout_s: float = Field(60.0, gt=0, le=86_400)
    """Wall limit of one env step; a step past it fails its trajectory (reported as data)."""
    seed_offset_eval: int = Field(1 << 30, ge=1)
    """Evaluation task seeds start here; training seeds are drawn below it (held-out seeds)."""


# -------------------------------------------------------------------------------------------------------- rollout
class RolloutConfig(_Section):
    temperature: float = Field(1.0, gt=0, le=10)
    """Training sampling temperature (the learner recomputes log-probs at the same temperature)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling (-1 = off)."""
    max_new_tokens: int = Field(96, ge=1, le=1_000_000)
    """Tokens per response (max_response_length 512 in the agent scripts)."""
    max_prompt_tokens: int = Field(2048, ge=1, le=10_000_000)
    """Step mode: a longer prompt fails its trajectory (official truncation='error')."""
    max_response_tokens: int = Field(512, ge=1, le=10_000_000)
    """Trajectory mode: the whole response block (model + tool tokens, max_response_length 16384 in math)."""
    stop: list[str] = Field(default_factory=list)
    """Extra stop strings (the tokenizer's EOS always stops)."""
    max_episode_retries: int = Field(3, ge=0, le=100)
    """Re-runs of a trajectory whose generator or env worker died mid-episode (it restarts from reset; a
    trajectory is never half-counted)."""
    max_staleness: int = Field(1, ge=0, le=1000)
    """Async bound (SPEAR_SPEC D5a): a group may start only while started groups < (max_staleness + version + 1)
    x groups_per_step. 0 = the exact synchronous algorithm."""


class EvalConfig(_Section):
    every: int = Field(10, ge=0)
    """Evaluate every this many learner steps (0 = only at the start and the end)."""
    num_tasks: int = Field(64, ge=0)
    """Held-out task seeds per evaluation (one rollout each)."""
    temperature: float = Field(0.4, ge=0, le=10)
    """Evaluation sampling temperature (0 = greedy; official validation: 0.4, sampled)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Evaluation nucleus mass (1 = off; the official math validation samples with 0.6). Training keeps
    rollout.top_p."""
    top_k: int = Field(-1, ge=-1)
    """Evaluation top-k (-1 = off)."""
    at_start: bool = True
    """Also evaluate before the first update."""


# ------------------------------------------------------------------------------------------------------ generator
class GeneratorConfig(_Section):
    backend: Literal["hf", "vllm"] = "hf"
    """'hf' (transformers, CPU or GPU) or 'vllm' (GPU)."""
    num_workers: int = Field(1, ge=1, le=10_000)
    """Generator actors (each owns one engine)."""
    num_cpus: float = Field(0.5, ge=0, le=1024)
    """Ray CPUs per generator (an accounting share: the default run fits a 2-core machine)."""
    num_gpus: float = Field(0.0, ge=0, le=64)
    """Ray GPUs per generator (vllm needs >= 1 x tensor_parallel_size)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per generator, e.g. {generator: 1} to land on the cluster's generator GPU nodes
    (cluster/ray-cluster.yaml); empty for a local run."""
    torch_threads: int = Field(1, ge=1, le=1024)
    """torch.set_num_threads inside each generator (Ray sets OMP_NUM_THREADS=1)."""
    batch_window_ms: float = Field(2.0, ge=0, le=10_000)
    """HF backend: requests arriving within this window are batched together."""
    max_batch_size: int = Field(64, ge=1, le=65_536)
    """HF backend: most requests in one decode batch."""
    max_restarts: int = Field(3, ge=-1, le=1000)
    """Ray restarts of a dead generator (-1 = forever)."""
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    """vLLM tensor parallel size."""
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    """vLLM share of GPU memory."""
    max_model_len: int | None = Field(None, ge=1)
    """vLLM max sequence length (None = the model's)."""
    enforce_eager: bool = False
    """vLLM: disable CUDA graphs."""


# ----------------------------------------------------------------------------------------------------------- algo
class ClipCovParams(_Section):
    ratio: float = Field(2e-4, ge=0, le=1)
    """Share of valid tokens to detach (N = max(floor(ratio * tokens), 1)), SPEAR_SPEC 5.2."""
    lb: float = 1.0
    """Lower covariance bound (strict)."""
    ub: float = 5.0
    """Upper covariance bound (strict)."""

    @model_validator(mode="after")
    def _bounds(self) -> ClipCovParams:
        if not self.lb < self.ub:
            raise ValueError(f"lb={self.lb} must be < ub={self.ub}")
        return self


class KLCovParams(_Section):
    ratio: float = Field(2e-4, ge=0, le=1)
    """Share of top-covariance tokens that get the KL penalty (SPEAR_SPEC 5.3)."""
    coef: float = Field(0.1, ge=0)
    """KL penalty coefficient (ppo_kl_coef)."""


class ToolBonusConfig(_Section):
    mode: Literal["none", "constant", "cosine"] = "none"
    """Tool-call (intrinsic) reward schedule d(t) (SPEAR_SPEC 9.2)."""
    decay_steps: int = Field(200, ge=1)
    """T_tc: cosine decay length in learner steps."""
    per_call: float = Field(0.1, ge=0)
    """Bonus per tool call (agent envs: per env step)."""
    cap: float = Field(1.0, ge=0)
    """Bonus cap per episode."""
    on_success: Literal["scaled", "flat"] = "scaled"
    """Bonus of an episode whose env reward is > 0: 'scaled' = min(cap, per_call x calls) x d(t), as every other
    episode (agent envs, the Qwen2.5 math reward); 'flat' = 1[calls > 0] x d(t) (the official Qwen3 math reward,
    SPEAR_SPEC 10.3)."""


class FilterConfig(_Section):
    overlong: bool = False
    """Mask samples whose response hit max_new_tokens (Dr.BoT, SPEAR_SPEC 6.5)."""
    void: bool = False
    """Mask void turns (agent: no <action> block; math: no tool call and no answer)."""
    repetitive: bool = False
    """Mask responses with a 20-gram repeated >= 10 times."""
    unreadable: bool = False
    """Mask responses with mojibake characters."""
    group_filter_ratio: float = Field(1.0, gt=0, le=1)
    """Keep this share of groups by reward std (1 = off), then a power-of-two sample subset (6.6)."""
    group_filter_kind: Literal["std", "std_rev"] = "std"
    """'std' keeps the highest-std groups, 'std_rev' the lowest."""


class TruncatedISConfig(_Section):
    enabled: Literal["auto", "on", "off"] = "auto"
    """Truncated importance weight min(pi_old / pi_behaviour, cap) per token (Part A D6); 'auto' = on when
    rollout.max_staleness > 0."""
    cap: float = Field(2.0, ge=1)
    """C, the truncation cap."""


class SILConfig(_Section):
    enabled: bool = False
    """Self-imitation from the prioritized replay (SPEAR_SPEC 7)."""
    coef: float = Field(1.0, ge=0)
    """lambda: the SIL loss weight after warm-up (replay_loss_coef)."""
    warmup_steps: int = Field(200, ge=1)
    """T_sil: cosine warm-up of the SIL weight (agent 200, math 300)."""
    buffer_size: int = Field(2048, ge=1)
    """trajectory_buffer_size: burst trigger at trigger_factor x this; most samples per replay draw."""
    tolerate_steps: int = Field(5, ge=0, le=10_000)
    """Evict entries older than this many learner steps (Part A D5b)."""
    baseline_window: int = Field(10240, ge=1)
    """Group means kept for the rolling P50 baseline."""
    mode: Literal["burst", "continuous"] = "burst"
    """'burst' = official trigger-draw-flush; 'continuous' = draw up to replay_batch every step (Part A D4)."""
    trigger_factor: float = Field(1.5, gt=0)
    """Burst trigger: samples above P50 > trigger_factor x buffer_size."""
    replay_batch: int = Field(256, ge=1)
    """Continuous mode: samples drawn per step."""
    alpha: float = Field(0.0, ge=0, le=10)
    """Priority exponent: p = max(A_recal, 0)^alpha; 0 = the official uniform draw after the P50 gate."""
    recal_weight: float = -1.0
    """weight_decay_trajectory_replay: <= 0 or > 1 = P50 recalibration (official); (0, 1] = A x weight."""
    keep_zero: bool = True
    """Replay keeps A_recal >= 0 (agent, official); False keeps > 0 (math)."""
    require_tool_call: bool = False
    """Insert only trajectories with >= 1 tool call (math tree, SPEAR_SPEC 7.2)."""


class AlgoConfig(_Section):
    preset: Literal["grpo", "gigpo", "drbot_grpo", "drbot_gigpo", "spear_grpo", "spear_gigpo"] | None = "spear_grpo"
    """Preset applied under your own algo keys (SPEAR_SPEC Part A D2, section 13); null = plain defaults."""
    adv_estimator: Literal["grpo", "gigpo"] = "grpo"
    """Advantage estimator (SPEAR_SPEC 4)."""
    norm_adv_by_std: bool = True
    """GRPO: divide by the group std (Dr.BoT/SPEAR: False). Also drives replay recalibration (7.6)."""
    gamma: float = Field(0.95, ge=0, le=1)
    """GiGPO step-return discount."""
    gigpo_step_weight: float = Field(1.0, ge=0)
    """omega: weight of the GiGPO step-level advantage."""
    gigpo_norm_by_std: bool = True
    """GiGPO mean_std_norm (True, all SPEAR scripts) or mean_norm (False)."""
    loss_mode: Literal["vanilla", "clip_cov", "kl_cov"] = "vanilla"
    """Policy loss (SPEAR_SPEC 5)."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """PPO clip epsilon below 1."""
    clip_high: float = Field(0.2, ge=0, le=10)
    """PPO clip epsilon above 1 (clip-higher: 0.28)."""
    dual_clip_c: float | None = Field(10.0, gt=1)
    """Dual-clip constant c for A < 0 (vanilla only); null = off."""
    loss_agg: LossAgg = "token-mean"
    """Loss aggregation (SPEAR_SPEC 5.5)."""
    loss_norm_length: int | None = Field(None, ge=1)
    """L of seq-mean-token-sum-norm; null = rollout.max_new_tokens (step) or rollout.max_response_tokens."""
    entropy_coef: float = Field(0.001, ge=0)
    """Entropy bonus coefficient (agent 0.001, math 0)."""
    invalid_action_penalty: float = Field(0.1, ge=0)
    """Subtracted from the score of a sample with an invalid action (SPEAR_SPEC 3.3)."""
    clip_cov: ClipCovParams = Field(default_factory=ClipCovParams)
    """On-policy Clip-Cov parameters (effective official 2e-4 / 1 / 5)."""
    replay_clip_cov: ClipCovParams = Field(default_factory=lambda: ClipCovParams(ratio=0.02, lb=2.0, ub=60.0))
    """Replay Clip-Cov parameters (agent scripts 0.02 / 2 / 60)."""
    kl_cov: KLCovParams = Field(default_factory=KLCovParams)
    """On-policy KL-Cov parameters."""
    replay_kl_cov: KLCovParams = Field(default_factory=lambda: KLCovParams(ratio=0.02))
    """Replay KL-Cov parameters."""
    tool_bonus: ToolBonusConfig = Field(default_factory=ToolBonusConfig)
    """Tool-call bonus b(t) added to every sample's score."""
    filters: FilterConfig = Field(default_factory=FilterConfig)
    """Dr.BoT sample and group filters."""
    truncated_is: TruncatedISConfig = Field(default_factory=TruncatedISConfig)
    """Off-policy correction for async rollouts."""
    sil: SILConfig = Field(default_factory=SILConfig)
    """Self-imitation learning and the replay buffer."""


# -------------------------------------------------------------------------------------------------------- learner
class LearnerConfig(_Section):
    num_ranks: int = Field(1, ge=1, le=4096)
    """Learner ranks (one torch.distributed group)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend; auto = nccl with GPUs, gloo without."""
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    """Data parallel wrapper (fsdp2 needs GPUs)."""
    num_cpus_per_rank: float = Field(0.5, ge=0, le=1024)
    """Ray CPUs per learner rank (an accounting share: the default run fits a 2-core machine)."""
    num_gpus_per_rank: float = Field(0.0, ge=0, le=64)
    """Ray GPUs per learner rank."""
    resources_per_rank: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per learner rank, e.g. {learner: 1} for the cluster's learner GPU nodes."""
    torch_threads: int = Field(1, ge=1, le=1024)
    """torch.set_num_threads inside each rank."""
    lr: float = Field(3e-4, gt=0, le=1)
    """AdamW learning rate, constant (paper: 1e-6 for 1.5B models)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clip; a non-finite norm skips the step."""
    mini_batch_size: int = Field(256, ge=1)
    """Samples per optimizer step, over all ranks (ppo_mini_batch_size)."""
    micro_batch_size: int = Field(16, ge=1)
    """Samples per forward/backward on one rank (unless max_tokens_per_micro_batch is set)."""
    max_tokens_per_micro_batch: int | None = Field(None, ge=1)
    """Dynamic micro-batches (verl's use_dynamic_bsz + ppo_max_token_len_per_gpu): each rank packs its rows, longest
    first, into micro-batches whose padded size (rows x (longest prompt + longest response)) stays within this many
    tokens, instead of micro_batch_size rows; the pi_old recompute packs the same way. Must hold the longest possible
    sample. None = fixed micro_batch_size."""
    ppo_epochs: int = Field(1, ge=1, le=100)
    """Passes over each on-policy batch."""


class WeightSyncConfig(_Section):
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Data-plane backend: auto = nccl when learners train on GPUs, else gloo. Use gloo when a learner and a
    generator share one GPU (NCCL refuses two members on one device)."""
    bucket_mb: float = Field(256.0, gt=0, le=65_536)
    """Flat bucket size for the weight broadcast (MiB). Each bucket is one collective, so small buckets pay a
    per-call cost (measured on gloo: 16 MiB ~0.8x a single flat broadcast, 64 MiB ~0.9x, 256 MiB ~1.0x); when
    learner and generator dtypes differ the sender holds two buckets of staging (verl's default is 512 MB, slime's
    256 MB). A model smaller than one bucket allocates only its own size."""
    timeout_s: float = Field(120.0, gt=0)
    """Every collective fails after this many seconds, naming the member that did not answer."""
    refit_check: bool = True
    """After each sync compare generator and learner log-probs on a fixed probe."""
    refit_tolerance: float = Field(1e-3, gt=0)
    """Largest allowed |generator - learner| log-prob difference on the probe."""
    refit_fail: bool = False
    """Stop the run when the refit check exceeds the tolerance (else only the metric)."""


class CheckpointConfig(_Section):
    every: int = Field(50, ge=0)
    """Checkpoint every this many learner steps (0 = only at the end)."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints kept on disk."""


class LoggingConfig(_Section):
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto = offline when wandb is installed and no WANDB_API_KEY is set, online when one is."""
    wandb_project: str = "spear-ray"
    """wandb project."""
    wandb_entity: str | None = None
    """wandb entity (team)."""
    progress_bar: bool = True
    """Live progress bar on the terminal."""
    ray_metrics: bool = True
    """Export gauges and counters through ray.util.metrics (Ray dashboard, Prometheus)."""


class RayConfig(_Section):
    address: str | None = None
    """Cluster address ('auto' inside `ray job submit`); null = start a local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """Local Ray: CPUs to advertise (null = all)."""
    object_store_memory_mb: int | None = Field(None, ge=64)
    """Local Ray: object store size."""
    in_process: bool = False
    """Debug mode: build every component as a plain object in this process (no Ray actors, one learner rank)."""
    namespace: str = "spear-ray"
    """Ray namespace of the run's actors."""
    include_dashboard: bool = False
    """Local Ray: start the dashboard (bound to dashboard_host)."""
    dashboard_host: str = "127.0.0.1"
    """Local Ray: dashboard bind address (never expose it without auth)."""


# ----------------------------------------------------------------------------------------------------------- root
class Config(_Section):
    seed: int = Field(0, ge=0)
    """Root seed: every component derives its own generator from it (Part A D7)."""
    steps: int = Field(200, ge=1, le=10_000_000)
    """Learner steps (total_epochs in verl-agent)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _check(self)
        return self

    # Resolved views (derived, not stored) -------------------------------------------------------------------
    def resolved_granularity(self) -> str:
        if self.env.granularity != "auto":
            return self.env.granularity
        from spear_ray import envs

        return envs.get_class(self.env.name).granularity

    def response_limit(self) -> tuple[str, int]:
        """The longest response block one sample can have, and the field that sets it: rollout.max_new_tokens at step
        granularity (one response), rollout.max_response_tokens at trajectory granularity (the whole block)."""
        if self.resolved_granularity() == "step":
            return "rollout.max_new_tokens", self.rollout.max_new_tokens
        return "rollout.max_response_tokens", self.rollout.max_response_tokens

    def loss_norm_length(self) -> int:
        if self.algo.loss_norm_length is not None:
            return self.algo.loss_norm_length
        return self.response_limit()[1]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config (every field, defaults included) as YAML."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


def _fail(key: str, value: Any, why: str, fix: str) -> None:
    raise ValueError(f"{key}={value!r} {why} ({fix})")


def _check(cfg: Config) -> None:
    """Cross-field checks, run once at load time."""
    t = cfg.model.tiny
    if t.hidden_size % t.num_heads:
        _fail(
            "model.tiny.num_heads", t.num_heads, f"must divide model.tiny.hidden_size={t.hidden_size}", "pick a divisor"
        )
    if t.num_heads % t.num_kv_heads:
        _fail(
            "model.tiny.num_kv_heads",
            t.num_kv_heads,
            f"must divide model.tiny.num_heads={t.num_heads}",
            "pick a divisor",
        )
    learner = cfg.learner
    if learner.micro_batch_size * learner.num_ranks > learner.mini_batch_size:
        _fail(
            "learner.micro_batch_size",
            learner.micro_batch_size,
            f"x learner.num_ranks={learner.num_ranks} exceeds learner.mini_batch_size={learner.mini_batch_size}",
            "lower micro_batch_size or raise mini_batch_size",
        )
    if learner.backend == "nccl" and learner.num_gpus_per_rank <= 0:
        _fail("learner.backend", "nccl", "needs GPUs", "set learner.num_gpus_per_rank >= 1 or learner.backend=gloo")
    if learner.strategy == "fsdp2" and learner.num_gpus_per_rank <= 0:
        _fail("learner.strategy", "fsdp2", "needs GPUs", "set learner.num_gpus_per_rank >= 1 or learner.strategy=ddp")
    gen = cfg.generator
    if gen.backend == "vllm" and gen.num_gpus < gen.tensor_parallel_size:
        _fail(
            "generator.num_gpus",
            gen.num_gpus,
            f"is below generator.tensor_parallel_size={gen.tensor_parallel_size} for the vllm backend",
            "set generator.num_gpus, or generator.backend=hf on CPU",
        )
    if cfg.algo.filters.group_filter_ratio < 1 and cfg.env.groups_per_step < 2:
        _fail(
            "algo.filters.group_filter_ratio",
            cfg.algo.filters.group_filter_ratio,
            "needs env.groups_per_step >= 2",
            "set the ratio to 1.0 or raise env.groups_per_step",
        )
    try:
        gran = cfg.resolved_granularity()
    except (KeyError, ImportError, TypeError, ValueError) as e:
        _fail("env.name", cfg.env.name, f"cannot be resolved: {e}", "use a registered env name or 'pkg.module:Class'")
    for name in cfg.env.eval_sets:
        if not re.fullmatch(r"[a-z0-9_]+", name):
            _fail(
                "env.eval_sets",
                name,
                "is not a usable set name (it becomes the metric prefix eval_<name>/)",
                "use lower-case letters, digits and underscores",
            )
    budget = learner.max_tokens_per_micro_batch
    if budget is not None:
        field, response = cfg.response_limit()
        longest = cfg.rollout.max_prompt_tokens + response
        if budget < longest:
            _fail(
                "learner.max_tokens_per_micro_batch",
                budget,
                f"is below the longest possible sample, {longest} tokens (rollout.max_prompt_tokens + {field})",
                f"raise it to >= {longest}",
            )
    if cfg.algo.adv_estimator == "gigpo" and gran != "step":
        _fail(
            "algo.adv_estimator",
            "gigpo",
            f"needs step granularity; env {cfg.env.name!r} is {gran}-granularity",
            "use a grpo preset for trajectory-granularity envs",
        )
    if cfg.algo.sil.enabled and cfg.algo.sil.mode == "burst" and cfg.algo.sil.buffer_size < 2:
        _fail(
            "algo.sil.buffer_size",
            cfg.algo.sil.buffer_size,
            "must be >= 2 in burst mode",
            "raise it or set algo.sil.mode=continuous",
        )


# ------------------------------------------------------------------------------------------------------- loading
def _field_doc(path: tuple) -> str:
    """The docstring and numeric bounds of the field at `path` (for error messages)."""
    model: Any = Config
    info = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        info = fields[part]
        model = info.annotation
        sub = [a for a in getattr(model, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if sub:
            model = sub[0]
    if info is None:
        return ""
    bounds = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                bounds.append(f"{sym} {getattr(m, attr)}")
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    text = f"{kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    return f"{text}; {info.description}" if info.description else text


def _known_keys(path: tuple) -> list[str]:
    model: Any = Config
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = fields[part].annotation
    return list(getattr(model, "model_fields", {}))


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {'.'.join(map(str, loc[:-1] + (near[0],)))!r}?" if near else f"known keys: {known}"
            lines.append(f"- {key}: unknown key ({hint})")
            continue
        if e["type"] == "value_error":
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"- {msg}" if not loc else f"- {key}: {msg}")
            continue
        doc = _field_doc(loc)
        lines.append(f"- {key}={e.get('input')!r}: {e['msg']}" + (f" (expected: {doc})" if doc else ""))
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Merge defaults < preset < YAML < dotted overrides, validate once, and return the config.

    Args:
        path: a YAML file of overrides; None = the CPU default run (field defaults plus `presets.CPU_DEFAULT`).
        overrides: OmegaConf dotlist entries such as "algo.clip_high=0.28".

    Raises:
        ConfigError: naming every bad key or value with what is expected.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    data: dict[str, Any] = deep_merge({}, CPU_DEFAULT) if path is None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"--config {str(path)!r} is not a file (give a YAML path such as configs/sokoban/spear_grpo.yaml)"
            )
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {str(path)!r} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {str(path)!r} must hold a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. algo.clip_high=0.28)")
    try:
        merged = OmegaConf.create(data)
        for item in overrides:  # each override replaces its node (so `env.options={}` clears the YAML's options)
            key = item.split("=", 1)[0]
            value = OmegaConf.select(OmegaConf.from_dotlist([item]), key)
            OmegaConf.update(merged, key, value, merge=False, force_add=True)
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot merge overrides {list(overrides)}: {e}") from e
    algo = data.get("algo") if isinstance(data.get("algo"), dict) else None
    preset = (algo or {}).get("preset", AlgoConfig.model_fields["preset"].default)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"algo.preset={preset!r} is not a preset (choose one of {', '.join(PRESETS)}, or null)")
        data["algo"] = deep_merge(preset_algo(preset), algo or {})
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
