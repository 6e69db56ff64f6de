"""The data half of a learner step end to end: trajectories -> samples -> scores, filters, advantages, checked
against SPEAR_SPEC section 15 (E3, E4) and the filter rules of 6.5-6.6."""

from dataclasses import replace

import pytest
import torch

from spear_ray.config import AlgoConfig
from spear_ray.data import Trajectory, Turn, samples_from_trajectories
from spear_ray.prepare import prepare_on_policy
from spear_ray.presets import deep_merge, preset_algo


def turn(reward=0.0, valid=True, anchor="", text="<think>t</think><action>a</action>", void=False, n=3):
    return Turn(
        [1, 2],
        [5] * n,
        [-0.1] * n,
        [0] * n,
        response_text=text,
        is_action_valid=valid,
        env_reward=reward,
        tool_calls=1,
        anchor_obs=anchor,
        is_void=void,
    )


def e3_group(group_id=0, first_traj=0):
    # A succeeds in 3 valid steps (reward 10 at the end); B fails after 2 steps, the second invalid.
    a = Trajectory(
        group_id=group_id,
        traj_id=first_traj,
        task_seed=0,
        success=True,
        turns=[turn(0, anchor="s0"), turn(0, anchor="a1"), turn(10, anchor="a2")],
    )
    b = Trajectory(
        group_id=group_id,
        traj_id=first_traj + 1,
        task_seed=0,
        turns=[turn(0, anchor="s0"), turn(0, valid=False, anchor="b1")],
    )
    return [a, b]


def algo(preset, **over):
    return AlgoConfig.model_validate(deep_merge(preset_algo(preset), over))


def run(trajs, cfg, step=1):
    return prepare_on_policy(
        samples_from_trajectories(trajs),
        algo=cfg,
        step=step,
        max_response_len=512,
        generator=torch.Generator().manual_seed(0),
    )


def test_e3_drbot_and_grpo_advantages_through_the_pipeline():
    # scores [10, 10, 10, 0, -0.1]: mean 5.98; A = s - mean (Dr.BoT/SPEAR), (s - mean) / (std + 1e-6) (GRPO)
    out = run(e3_group(), algo("drbot_grpo", filters={"group_filter_ratio": 1.0}))
    assert out.samples.column("score").to_pylist() == pytest.approx([10, 10, 10, 0, -0.1], abs=1e-6)
    assert out.samples.column("advantage").to_pylist() == pytest.approx([4.02, 4.02, 4.02, -5.98, -6.08], abs=1e-5)
    grpo = run(e3_group(), algo("grpo"))
    assert grpo.samples.column("advantage").to_pylist() == pytest.approx(
        [0.730282, 0.730282, 0.730282, -1.086339, -1.104505], abs=1e-5
    )


def test_e4_gigpo_step_term_through_the_pipeline():
    # Episode term = E3 with std normalisation; the shared first observation "s0" clusters A's and B's first
    # steps: G = {9.025, 0} -> +-0.70711; every other step is a singleton cluster -> 0.
    out = run(e3_group(), algo("gigpo"))
    ep = [0.730282, 0.730282, 0.730282, -1.086339, -1.104505]
    step = [0.70711, 0.0, 0.0, -0.70711, 0.0]
    assert out.samples.column("advantage").to_pylist() == pytest.approx([e + s for e, s in zip(ep, step)], abs=1e-4)
    # step returns with the penalty on B's invalid step: A [9.025, 9.5, 10], B [0, -0.1]
    assert out.samples.column("step_return").to_pylist() == pytest.approx([9.025, 9.5, 10, 0, -0.1], abs=1e-5)


def test_tool_bonus_enters_the_score():
    # E2: t=50, bonus = min(1, 0.1 * calls) * 0.8535534; every step here makes 1 call: A has 3, B has 2.
    out = run(e3_group(), algo("spear_grpo", filters={"group_filter_ratio": 1.0}), step=50)
    d = 0.8535534
    expected = [10 + 0.3 * d] * 3 + [0.2 * d, 0.2 * d - 0.1]
    assert out.samples.column("score").to_pylist() == pytest.approx(expected, abs=1e-5)
    assert out.metrics["algo/tool_bonus_mean"] == pytest.approx((0.9 * d + 0.4 * d) / 5, abs=1e-6)


def test_flagged_samples_get_zero_advantage_but_stay_in_the_statistics():
    trajs = e3_group()
    trajs[1].turns[0].is_void = True  # B's first step is a void turn
    cfg = algo("drbot_grpo", filters={"group_filter_ratio": 1.0})
    out = run(trajs, cfg)
    adv = out.samples.column("advantage").to_pylist()
    assert adv[3] == 0.0
    assert adv[:3] == pytest.approx([4.02] * 3, abs=1e-5)  # the mean still counts the void sample's score
    assert out.metrics["filter/void"] == 1.0
    off = run(trajs, algo("drbot_grpo", filters={"void": False, "group_filter_ratio": 1.0}))
    assert off.samples.column("advantage").to_pylist()[3] == pytest.approx(-5.98, abs=1e-5)


def test_overlong_and_unreadable_flags():
    trajs = e3_group()
    trajs[0].turns[1] = turn(0, anchor="a1", n=512)  # hits max_response_len=512
    trajs[1].turns[1].response_text = "bad \ufffd text"
    out = run(trajs, algo("drbot_grpo", filters={"group_filter_ratio": 1.0}))
    adv = out.samples.column("advantage").to_pylist()
    assert adv[1] == 0.0 and adv[4] == 0.0 and adv[0] != 0.0
    assert out.metrics["filter/overlong"] == 1.0 and out.metrics["filter/unreadable"] == 1.0


def test_group_filter_keeps_varied_groups_then_a_power_of_two():
    # group 0 has reward variance, group 1 all-equal (std 0): ratio 0.5 keeps group 0 (5 samples) -> 4 samples
    flat = [Trajectory(group_id=1, traj_id=10 + i, task_seed=1, turns=[turn(0, anchor="z")]) for i in range(2)]
    out = run(e3_group() + flat, algo("drbot_grpo", filters={"group_filter_ratio": 0.5}))
    assert out.samples.num_rows == 4 and set(out.samples.column("group_id").to_pylist()) == {0}
    assert out.metrics["filter/groups_kept"] == 1.0


def test_empty_batch():
    out = run([], algo("spear_grpo"))
    assert out.samples.num_rows == 0


@pytest.mark.parametrize("on_success, variant", [("flat", "qwen3"), ("scaled", "qwen2")])
def test_math_tool_bonus_forms_match_the_official_rewards(on_success, variant):
    """10.3: `flat` is the Qwen3 reward (a correct answer gets 1[c > 0] d(t)), `scaled` the Qwen2.5 one (c d(t) for
    every answer); both equal algo.scores.math_scores on strict-box scores, through the whole pipeline."""
    from spear_ray.algo.scores import math_scores

    cases = [(1.0, 3), (1.0, 0), (-1.0, 2), (-1.0, 0), (1.0, 12)]  # (strict-box score, tool-calling turns)

    def episode(i, base, calls):
        """`calls` tool-calling turns with reward 0, then the answer turn with the score (no call)."""
        turns = [replace(turn(0.0, n=2), tool_calls=1) for _ in range(calls)] + [replace(turn(base, n=2), tool_calls=0)]
        return Trajectory(group_id=0, traj_id=i, task_seed=0, granularity="trajectory", success=base > 0, turns=turns)

    trajs = [episode(i, base, calls) for i, (base, calls) in enumerate(cases)]
    assert [t.num_tool_calls for t in trajs] == [c for _, c in cases]
    cfg = algo(
        "spear_grpo",
        filters={"group_filter_ratio": 1.0},
        invalid_action_penalty=0.0,
        tool_bonus={"on_success": on_success},
    )
    step = 50
    out = run(trajs, cfg, step=step)
    want = math_scores(
        torch.tensor([b for b, _ in cases], dtype=torch.float64),
        torch.tensor([c for _, c in cases]),
        step=step,
        variant=variant,
    )
    assert out.samples.column("score").to_pylist() == pytest.approx(want.tolist(), abs=1e-6)
    d = 0.8535534
    if on_success == "flat":
        assert out.samples.column("score").to_pylist() == pytest.approx([1 + d, 1, -1 + 0.2 * d, -1, 1 + d], abs=1e-6)
