"""From finished groups to advantages: the data half of one learner step (SPEAR_SPEC 2.1 steps 2 and 6-10), reading
like the algorithm and calling every formula by name from `spear_ray.algo`.

    returns   = discounted_returns(...)                      (GiGPO step returns, before any filter)
    rm        = R + tool_call_bonus(t, calls)                (reward before the penalty, 3.2; 10.3 Qwen3 form)
    kept      = low_variance_group_filter(rm, ...)           (6.6)
    flags     = overlong | void | repetitive | unreadable    (6.5; flagged samples get advantage 0)
    score     = rm - penalty * (1 - valid)                   (3.3)
    advantage = grpo_advantages(score) or gigpo_advantages(score, returns - penalty, anchors)   (4)

Departure (Part A D3): the sample filters apply whenever enabled, Dr.BoT runs included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from spear_ray.algo.advantages import anchor_groups, discounted_returns, gigpo_advantages, grpo_advantages
from spear_ray.algo.filters import (
    apply_invalid_action_penalty,
    low_variance_group_filter,
    overlong_flags,
    repetitive_flags,
    unreadable_flags,
)
from spear_ray.algo.schedules import tool_call_bonus
from spear_ray.config import AlgoConfig
from spear_ray.data.convert import column_tensor, set_columns


@dataclass
class PreparedBatch:
    samples: pa.Table  # SAMPLE_SCHEMA rows kept for training, with score, advantage, step_return filled
    metrics: dict[str, float]


def prepare_on_policy(
    samples: pa.Table,
    *,
    algo: AlgoConfig,
    step: int,
    max_response_len: int,
    generator: torch.Generator,
) -> PreparedBatch:
    """Scores, filters and advantages of one step's on-policy samples (SAMPLE_SCHEMA rows in trajectory order).

    Args:
        samples: rows of the step's groups (`samples_from_trajectories`).
        algo: `cfg.algo`.
        step: learner step t (starts at 1), for the tool-call decay d(t).
        max_response_len: the over-long threshold: rollout.max_new_tokens (step mode, one response) or
            rollout.max_response_tokens (trajectory mode, the whole response block).
        generator: randomness of the group filter's power-of-two subsample (Part A D7).

    Returns:
        PreparedBatch: the kept rows (filtered samples kept with advantage 0) and `algo/`, `filter/` metrics.
    """
    n = samples.num_rows
    if n == 0:
        return PreparedBatch(samples, {"filter/samples_in": 0.0, "filter/samples_out": 0.0})
    group = column_tensor(samples, "group_id", np.int64)
    traj = column_tensor(samples, "traj_id", np.int64)
    valid = column_tensor(samples, "is_action_valid", bool)
    gigpo = algo.adv_estimator == "gigpo"

    # GiGPO step returns G_k = r_k + gamma G_{k+1} on the whole rollout batch (4.2), samples in trajectory order.
    returns = (
        discounted_returns(column_tensor(samples, "env_reward", np.float64), traj, gamma=algo.gamma) if gigpo else None
    )

    tb = algo.tool_bonus
    calls = column_tensor(samples, "num_tool_calls", np.int64)
    reward = column_tensor(samples, "episode_reward", np.float64)
    schedule = dict(mode=tb.mode, decay_steps=tb.decay_steps, dtype=torch.float64)
    bonus = tool_call_bonus(step, calls, per_call=tb.per_call, cap=tb.cap, **schedule)
    if tb.on_success == "flat":  # the Qwen3 math reward (10.3): a correct answer gets 1[c > 0] d(t)
        flat = tool_call_bonus(step, (calls > 0).long(), per_call=1.0, cap=1.0, **schedule)
        bonus = torch.where(reward > 0, flat, bonus)
    rm = reward + bonus

    kept = low_variance_group_filter(
        rm,
        group,
        traj,
        ratio=algo.filters.group_filter_ratio,
        kind=algo.filters.group_filter_kind,
        generator=generator,
    )
    idx = kept.indices
    samples = samples.take(pa.array(idx.numpy()))
    group, traj, valid, rm, bonus = group[idx], traj[idx], valid[idx], rm[idx], bonus[idx]

    f = algo.filters
    flags = torch.zeros(idx.numel(), dtype=torch.bool)
    counts: dict[str, float] = {}
    checks = {
        "overlong": lambda: overlong_flags(
            torch.from_numpy(
                samples.column("response_ids").combine_chunks().value_lengths().to_numpy().astype(np.int64)
            ),
            max_response_len=max_response_len,
        ),
        "void": lambda: column_tensor(samples, "is_void", bool),
        "repetitive": lambda: repetitive_flags(samples.column("response_ids").to_pylist()),
        "unreadable": lambda: unreadable_flags(samples.column("response_text").to_pylist()),
    }
    for name, check in checks.items():
        if getattr(f, name) and idx.numel():
            hit = check()
            counts[f"filter/{name}"] = float(hit.sum())
            flags |= hit

    score = apply_invalid_action_penalty(rm, valid, coef=algo.invalid_action_penalty)
    if gigpo:
        step_returns = apply_invalid_action_penalty(returns[idx], valid, coef=algo.invalid_action_penalty)
        anchors = anchor_groups(group, samples.column("anchor_obs").to_pylist())
        adv = gigpo_advantages(
            score, step_returns, group, anchors, step_weight=algo.gigpo_step_weight, norm_by_std=algo.gigpo_norm_by_std
        )
    else:
        step_returns = None
        adv = grpo_advantages(score, group, norm_by_std=algo.norm_adv_by_std)
    adv = torch.where(flags, torch.zeros_like(adv), adv)  # A_ik = A_i * m_ik with the filtered mask (4.1, 6.5)

    columns = {"score": score.float(), "advantage": adv.float()}
    if step_returns is not None:
        columns["step_return"] = step_returns.float()
    samples = set_columns(samples, **columns)
    metrics = {
        **{f"filter/{k}": v for k, v in kept.metrics.items()},
        **counts,
        "filter/flagged": float(flags.sum()),
        "algo/tool_bonus_mean": float(bonus.mean()) if bonus.numel() else 0.0,
        "algo/score_mean": float(score.mean()) if score.numel() else 0.0,
        "algo/advantage_mean": float(adv.mean()) if adv.numel() else 0.0,
        "algo/advantage_abs_mean": float(adv.abs().mean()) if adv.numel() else 0.0,
        "algo/advantage_positive_frac": float((adv > 0).double().mean()) if adv.numel() else 0.0,
    }
    return PreparedBatch(samples, metrics)
