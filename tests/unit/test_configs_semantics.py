"""What the YAML files in configs/ mean, beyond "it validates" (tests/unit/test_config.py loads every one):
each paper config resolves to its SPEAR_SPEC section 13 (agent) or 10.4 (math) row with the paper's batch sizes, lr
and model; the top-level files are quick CPU runs of the preset they are named after. Table-driven: each test lists
every mismatch (file, key, got, want) in one assertion message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from spear_ray.config import Config, load_config
from spear_ray.presets import PRESETS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
VARIANTS = ("grpo", "gigpo", "drbot_grpo", "drbot_gigpo", "spear_grpo", "spear_gigpo")
AGENT_ENVS = ("alfworld", "webshop", "sokoban")
MATH_VARIANTS = ("grpo", "drbot_grpo", "spear_grpo")  # no GiGPO: math is trajectory granularity
PAPER_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"

# SPEAR_SPEC section 13 variant table (and 10.4 for the GRPO variants in math), one row per preset.
ROW_KEYS = (
    "algo.adv_estimator",
    "algo.clip_high",
    "algo.norm_adv_by_std",
    "algo.loss_agg",
    "algo.filters.overlong",
    "algo.filters.void",
    "algo.filters.group_filter_ratio",
    "algo.loss_mode",
    "algo.sil.enabled",
    "algo.tool_bonus.mode",
)
_DRBOT = ("seq-mean-token-sum-norm", True, True, 0.75)
SECTION_13: dict[str, tuple] = {
    #                adv      clip_high norm_std loss_agg, overlong, void, ratio        loss_mode  sil    tool
    "grpo": ("grpo", 0.2, True, "token-mean", False, False, 1.0, "vanilla", False, "none"),
    "gigpo": ("gigpo", 0.2, True, "token-mean", False, False, 1.0, "vanilla", False, "none"),
    "drbot_grpo": ("grpo", 0.28, False, *_DRBOT, "vanilla", False, "none"),
    "drbot_gigpo": ("gigpo", 0.28, False, *_DRBOT, "vanilla", False, "none"),
    "spear_grpo": ("grpo", 0.28, False, *_DRBOT, "clip_cov", True, "cosine"),
    "spear_gigpo": ("gigpo", 0.28, False, *_DRBOT, "clip_cov", True, "cosine"),
}

# Common to every agent paper config (section 13 "Common to all 12 agent scripts" and Part A D2).
AGENT_COMMON: dict[str, Any] = {
    "model.path": PAPER_MODEL,
    "model.dtype": "bfloat16",
    "env.group_size": 8,
    "env.groups_per_step": 32,
    "env.history_length": 2,
    "rollout.max_new_tokens": 512,
    "rollout.temperature": 1.0,
    "learner.lr": 1e-6,
    "learner.grad_clip": 1.0,
    "learner.ppo_epochs": 1,
    "learner.num_gpus_per_rank": 1,
    "learner.backend": "nccl",
    "generator.backend": "vllm",
    "generator.num_gpus": 1,
    "generator.tensor_parallel_size": 1,
    "generator.gpu_memory_utilization": 0.6,
    "eval.every": 5,
    "eval.num_tasks": 128,
    "eval.temperature": 0.4,
    "checkpoint.every": 10,
    "algo.clip_low": 0.2,
    "algo.dual_clip_c": 10.0,
    "algo.entropy_coef": 0.001,
    "algo.invalid_action_penalty": 0.1,
    "algo.gamma": 0.95,
    "algo.gigpo_step_weight": 1.0,
    "algo.gigpo_norm_by_std": True,
    "algo.clip_cov.ratio": 2e-4,
    "algo.clip_cov.lb": 1.0,
    "algo.clip_cov.ub": 5.0,
    "algo.replay_clip_cov.ratio": 0.02,
    "algo.replay_clip_cov.lb": 2.0,
    "algo.replay_clip_cov.ub": 60.0,
    "algo.tool_bonus.decay_steps": 200,
    "algo.tool_bonus.on_success": "scaled",  # agent bonus: min(1, 0.1 x length) d(t) for every episode (3.2)
    "algo.sil.warmup_steps": 200,
    "algo.sil.buffer_size": 2048,
    "algo.sil.tolerate_steps": 5,
    "algo.sil.coef": 1.0,
    "algo.sil.baseline_window": 10240,
    "algo.sil.keep_zero": True,
}
# Per-environment rows of the section 13 table (Sokoban: the gigpo_dynamic script's sizes, SPEAR_SPEC 11/13).
AGENT_ENV: dict[str, dict[str, Any]] = {
    "alfworld": {
        "steps": 200,
        "env.name": "alfworld",
        "env.max_turns": 50,
        "env.options.split": "train",
        "env.eval_options.split": "eval_in_distribution",
        "rollout.max_prompt_tokens": 2048,
        "learner.mini_batch_size": 1024,
        "learner.micro_batch_size": 8,
    },
    "webshop": {
        "steps": 350,
        "env.name": "webshop",
        "env.max_turns": 15,
        "env.options.use_small": True,
        "env.options.split": "train",
        "env.eval_options.split": "test",
        "rollout.max_prompt_tokens": 4096,
        "learner.mini_batch_size": 256,
        "learner.micro_batch_size": 4,
    },
    "sokoban": {
        "env.name": "sokoban",
        "env.max_turns": 15,
        "env.options.dim_room": [6, 6],
        "env.options.num_boxes": 1,
        "env.options.max_steps": 15,
        "rollout.max_prompt_tokens": 2048,
        "learner.mini_batch_size": 64,
    },
}

# The quick CPU runs (configs/<preset>.yaml): the tiny model on a small Sokoban room.
CPU_RUN: dict[str, Any] = {
    "model.path": "tiny",
    "generator.backend": "hf",
    "generator.num_gpus": 0.0,
    "learner.num_gpus_per_rank": 0.0,
    "learner.backend": "auto",
    "env.name": "sokoban",
    "env.options.dim_room": [5, 5],
    "env.options.num_boxes": 1,
    "env.max_turns": 8,
    "env.group_size": 4,
    "env.groups_per_step": 4,
    "rollout.max_new_tokens": 48,
}

# SPEAR_SPEC 10.4 (Qwen3-32B scripts), with replay Clip-Cov honoured in trajectory mode (Part A D3).
MATH_COMMON: dict[str, Any] = {
    "env.name": "math",
    "env.options.data": "BytedTsinghua-SIA/DAPO-Math-17k",
    "env.eval_options.data": "Maxwell-Jia/AIME_2024",
    "env.eval_sets.aime25.data": "yentinglin/aime_2025",  # 10.4: AIME 2024 and AIME 2025
    "env.max_turns": 8,
    "env.group_size": 16,
    "env.groups_per_step": 128,
    "rollout.max_prompt_tokens": 2048,
    "rollout.max_response_tokens": 16384,
    "learner.lr": 1e-6,
    "learner.mini_batch_size": 1024,  # 64 prompts x 16
    "learner.max_tokens_per_micro_batch": 18432,  # use_dynamic_bsz, ppo_max_token_len_per_gpu (10.4)
    "eval.every": 5,
    "eval.temperature": 1.0,
    "eval.top_p": 0.6,  # val T=1.0, top_p=0.6 (10.4)
    "model.dtype": "bfloat16",
    "generator.backend": "vllm",
    "algo.entropy_coef": 0.0,
    "algo.invalid_action_penalty": 0.0,
    "algo.clip_low": 0.2,
    "algo.clip_cov.ratio": 2e-4,
    "algo.clip_cov.lb": 1.0,
    "algo.clip_cov.ub": 5.0,
    "algo.replay_clip_cov.ratio": 0.02,
    "algo.replay_clip_cov.lb": 1.0,
    "algo.replay_clip_cov.ub": 40.0,
    "algo.sil.warmup_steps": 300,
    "algo.sil.keep_zero": False,
    "algo.sil.require_tool_call": True,
    "algo.sil.buffer_size": 2048,
    "algo.sil.baseline_window": 10240,
    "algo.sil.tolerate_steps": 5,
    "algo.tool_bonus.decay_steps": 200,
    "algo.tool_bonus.per_call": 0.1,
    "algo.tool_bonus.cap": 1.0,
    "algo.tool_bonus.on_success": "flat",  # the qwen3 reward (10.3)
}


# ------------------------------------------------------------------------------------------------------- helpers
def lookup(cfg: Config, dotted: str) -> Any:
    """The value at `a.b.c` of a config, walking attributes and (for env.options) dict keys."""
    value: Any = cfg
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return abs(got - want) <= 1e-12 * max(1.0, abs(want))
    if isinstance(want, list):
        return isinstance(got, (list, tuple)) and list(got) == want
    return got == want


def mismatches(path: Path, cfg: Config, expected: dict[str, Any]) -> list[str]:
    """One line per key whose resolved value differs from the expected one."""
    out = []
    for key, want in expected.items():
        try:
            got = lookup(cfg, key)
        except (KeyError, AttributeError):
            out.append(f"{path.relative_to(REPO)}: {key} is not set (want {want!r})")
            continue
        if not _same(got, want):
            out.append(f"{path.relative_to(REPO)}: {key}={got!r}, want {want!r}")
    return out


def row_of(variant: str) -> dict[str, Any]:
    return dict(zip(ROW_KEYS, SECTION_13[variant], strict=True))


def raw_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


AGENT_FILES = [CONFIGS / env / f"{v}.yaml" for env in AGENT_ENVS for v in VARIANTS]
CPU_FILES = [CONFIGS / f"{v}.yaml" for v in VARIANTS]
MATH_FILES = [CONFIGS / "math" / f"{v}.yaml" for v in MATH_VARIANTS]


# ---------------------------------------------------------------------------------------------------------- tests
def test_section_13_table_matches_the_presets():
    # The table above is the spec's; the presets must say the same (test_config checks them against the spec too).
    assert set(SECTION_13) == set(PRESETS) == set(VARIANTS)
    bad = []
    for variant in VARIANTS:
        cfg = load_config(None, [f"algo.preset={variant}", "env.name=sokoban"])
        bad += mismatches(CONFIGS / f"{variant}.yaml", cfg, row_of(variant))
    assert not bad, "\n".join(bad)


def test_the_config_tree_is_complete():
    want = {CONFIGS / "cpu_default.yaml", *AGENT_FILES, *CPU_FILES, *MATH_FILES}
    have = set(CONFIGS.rglob("*.yaml"))
    assert have == want, f"missing: {sorted(map(_id, want - have))}; unexpected: {sorted(map(_id, have - want))}"
    assert not (CONFIGS / "math" / "gigpo.yaml").exists()


@pytest.mark.parametrize("path", [*AGENT_FILES, *CPU_FILES, *MATH_FILES, CONFIGS / "cpu_default.yaml"], ids=_id)
def test_every_file_has_a_header_that_says_how_to_run_it(path: Path):
    text = path.read_text()
    assert text.startswith("# "), f"{_id(path)}: no header comment"
    header = text.split("\n\n")[0]
    assert f"spear-ray train --config configs/{_id(path)}" in header, f"{_id(path)}: the header has no run command"
    assert all(len(line) <= 120 for line in text.splitlines()), f"{_id(path)}: a line is longer than 120 columns"


@pytest.mark.parametrize("path", AGENT_FILES, ids=_id)
def test_agent_paper_configs_are_their_section_13_row(path: Path):
    env, variant = path.parent.name, path.stem
    cfg = load_config(path)
    expected = {"algo.preset": variant, **row_of(variant), **AGENT_COMMON, **AGENT_ENV[env]}
    bad = mismatches(path, cfg, expected)
    # The algorithm comes from the preset alone: the file sets no other algo key.
    algo_keys = set(raw_yaml(path).get("algo", {}))
    if algo_keys != {"preset"}:
        bad.append(f"{_id(path)}: algo sets {sorted(algo_keys - {'preset'})} beyond the preset")
    if cfg.resolved_granularity() != "step":
        bad.append(f"{_id(path)}: granularity {cfg.resolved_granularity()}, want step")
    gen = cfg.generator
    if gen.max_model_len is not None and gen.max_model_len < cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens:
        bad.append(f"{_id(path)}: generator.max_model_len={gen.max_model_len} < prompt + response tokens")
    assert not bad, "\n".join(bad)


def test_eval_at_start_only_for_the_webshop_grpo_baseline():
    # val_before_train: True only in the WebShop GRPO script, False in the other eleven (SPEAR_SPEC 13).
    bad = []
    for path in AGENT_FILES:
        want = path.parent.name == "webshop" and path.stem == "grpo"
        if path.parent.name != "sokoban" and load_config(path).eval.at_start != want:
            bad.append(f"{_id(path)}: eval.at_start={not want}, want {want}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", CPU_FILES, ids=_id)
def test_top_level_files_are_quick_cpu_runs_of_their_preset(path: Path):
    variant = path.stem
    cfg = load_config(path)
    bad = mismatches(path, cfg, {"algo.preset": variant, **row_of(variant), **CPU_RUN})
    if cfg.resolved_granularity() != "step":
        bad.append(f"{_id(path)}: granularity {cfg.resolved_granularity()}, want step (GiGPO needs it)")
    if cfg.learner.mini_batch_size < cfg.learner.micro_batch_size:
        bad.append(f"{_id(path)}: learner.mini_batch_size < learner.micro_batch_size")
    options = cfg.env.options
    if options.get("max_steps", cfg.env.max_turns) != cfg.env.max_turns:
        bad.append(f"{_id(path)}: env.options.max_steps={options['max_steps']} differs from env.max_turns")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", MATH_FILES, ids=_id)
def test_math_configs_follow_section_10_4(path: Path):
    variant = path.stem
    cfg = load_config(path)
    bad = mismatches(path, cfg, {"algo.preset": variant, **row_of(variant), **MATH_COMMON})
    if cfg.resolved_granularity() != "trajectory":
        bad.append(f"{_id(path)}: granularity {cfg.resolved_granularity()}, want trajectory")
    if cfg.model.path in ("tiny", PAPER_MODEL):
        bad.append(f"{_id(path)}: model.path={cfg.model.path!r} is not the ReTool-SFT checkpoint placeholder")
    if cfg.rollout.max_new_tokens < cfg.rollout.max_response_tokens:
        bad.append(f"{_id(path)}: a turn may not use the whole response budget (max_new_tokens < max_response_tokens)")
    if cfg.loss_norm_length() != 16384:
        bad.append(f"{_id(path)}: seq-mean-token-sum-norm length {cfg.loss_norm_length()}, want 16384")
    assert not bad, "\n".join(bad)


def test_cpu_default_is_the_field_defaults_made_explicit():
    path = CONFIGS / "cpu_default.yaml"
    raw = raw_yaml(path)
    assert set(raw) <= {"algo", "env", "steps"} and set(raw.get("algo", {})) <= {"preset", "sil", "tool_bonus"}, raw
    cfg = load_config(path)
    defaults = load_config()
    bad = mismatches(path, cfg, {"algo.preset": "spear_grpo", "env.name": "calculator", "model.path": "tiny"})
    bad += [
        f"{_id(path)}: {section} differs from the defaults"
        for section in ("algo", "model", "learner", "rollout", "env", "generator", "eval")
        if getattr(cfg, section) != getattr(defaults, section)
    ]
    assert cfg == defaults  # `spear-ray train` with no --config runs exactly this file
    assert not bad, "\n".join(bad)
