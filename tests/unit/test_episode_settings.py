"""The sampling settings the driver gives training and evaluation episodes (driver.episode_settings)."""

from __future__ import annotations

from pathlib import Path

from spear_ray.config import load_config
from spear_ray.driver import episode_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_eval_samples_with_the_eval_knobs_and_training_with_the_rollout_ones():
    cfg = load_config(
        None,
        ["eval.temperature=1.0", "eval.top_p=0.6", "eval.top_k=20", "rollout.top_p=0.9", "rollout.max_new_tokens=77"],
    )
    train = episode_settings(cfg, max_turns=3, eval=False)
    ev = episode_settings(cfg, max_turns=3, eval=True)
    assert (train.params.temperature, train.params.top_p, train.params.top_k) == (1.0, 0.9, -1)
    assert (ev.params.temperature, ev.params.top_p, ev.params.top_k) == (1.0, 0.6, 20)
    assert train.params.max_new_tokens == ev.params.max_new_tokens == 77
    assert (train.sample_seed, ev.sample_seed) == (cfg.seed, cfg.seed + 1)
    assert train.granularity == ev.granularity == cfg.resolved_granularity()
    assert train.max_turns == ev.max_turns == 3


def test_default_eval_is_the_official_agent_validation():
    """Agent tasks validate at T=0.4 with no nucleus or top-k cut (SPEAR_SPEC Part B section 13)."""
    ev = episode_settings(load_config(None), max_turns=2, eval=True).params
    assert (ev.temperature, ev.top_p, ev.top_k) == (0.4, 1.0, -1)


def test_math_configs_validate_at_top_p_0_6():
    for name in ("grpo", "drbot_grpo", "spear_grpo"):
        cfg = load_config(CONFIGS / "math" / f"{name}.yaml")
        ev = episode_settings(cfg, max_turns=cfg.env.max_turns, eval=True).params
        assert (ev.temperature, ev.top_p) == (1.0, 0.6), name
