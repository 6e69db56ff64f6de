"""Evaluation sets (env.eval_options, env.eval_sets, env.eval_num_workers) through System.build and
Trainer.evaluate, in the in-process mode with the tiny model: every set gets its own env workers with its own
options, is evaluated on the same held-out seeds at the same time, and reports under its own metric prefix."""

import asyncio

import pytest

from actors.controller import System, eval_set_options, required_resources
from spear_ray.config import ConfigError, load_config
from spear_ray.driver import Trainer, TrainState
from spear_ray.models import load_tokenizer
from spear_ray.rollout.chat import ChatCodec


class Recorder:
    def log(self, step, metrics):
        pass

    def log_histogram(self, *args, **kwargs):
        pass


def config(model_dir, *extra):
    base = [
        f"model.path={model_dir}",
        "ray.in_process=true",
        "env.name=sokoban",
        "env.options={dim_room: [5, 5], num_boxes: 1, max_steps: 3}",
        "env.max_turns=3",
        "env.envs_per_worker=4",
        "rollout.max_new_tokens=8",
        "eval.num_tasks=3",
        "logging.progress_bar=false",
    ]
    return load_config(None, base + list(extra))


def test_each_eval_set_has_its_own_workers_options_and_metrics(tiny_model_dir, tmp_path):
    cfg = config(
        tiny_model_dir,
        "env.eval_options={max_steps: 2}",
        "env.eval_sets={big: {dim_room: [6, 6]}, two_boxes: {num_boxes: 2, dim_room: [6, 6]}}",
        "env.eval_num_workers=2",
    )
    assert eval_set_options(cfg) == {
        "": {"dim_room": [5, 5], "num_boxes": 1, "max_steps": 2},
        "big": {"dim_room": [6, 6], "num_boxes": 1, "max_steps": 2},
        "two_boxes": {"dim_room": [6, 6], "num_boxes": 2, "max_steps": 2},
    }
    env_cpus = next(v["CPU"] for k, v in required_resources(cfg).items() if k.startswith("env workers"))
    assert env_cpus == pytest.approx((1 + 3 * 2) * cfg.env.num_cpus_per_worker)

    system = System.build(cfg, str(tiny_model_dir), policy_version=0, training=False)
    try:
        assert [w.host.options for w in system.env_workers] == [{"dim_room": [5, 5], "num_boxes": 1, "max_steps": 3}]
        assert [w.host.options["max_steps"] for w in system.eval_env_workers] == [2, 2]
        assert sorted(system.eval_sets) == ["big", "two_boxes"]
        assert [w.host.options["num_boxes"] for w in system.eval_sets["two_boxes"]] == [2, 2]
        assert len(system.all_env_workers()) == 1 + 3 * 2
        t = Trainer(cfg, system, TrainState(), Recorder(), tmp_path, ChatCodec(load_tokenizer(tiny_model_dir)))
        metrics = asyncio.run(asyncio.wait_for(t.evaluate(0), timeout=300))
        # every set ran its episodes on its own workers; the training worker ran none
        used = {name: sum(w.stats()["env/resets"] for w in ws) for name, ws in system.eval_sets.items()}
        used["eval"] = sum(w.stats()["env/resets"] for w in system.eval_env_workers)
        used["train"] = system.env_workers[0].stats()["env/resets"]
    finally:
        system.shutdown()
    for prefix in ("eval", "eval_big", "eval_two_boxes"):
        assert 0.0 <= metrics[f"{prefix}/success_rate"] <= 1.0, metrics
    assert used == {"big": 3, "two_boxes": 3, "eval": 3, "train": 0}


def test_without_eval_options_the_default_set_shares_the_training_workers(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, "env.eval_sets={big: {dim_room: [6, 6]}}")
    system = System.build(cfg, str(tiny_model_dir), policy_version=0, training=False)
    try:
        assert system.eval_env_workers is system.env_workers
        assert len(system.eval_sets["big"]) == 1
    finally:
        system.shutdown()


@pytest.mark.parametrize(
    "override, needles",
    [
        ("env.eval_sets={aime-25: {data: x}}", ["env.eval_sets='aime-25'", "lower-case letters, digits"]),
        ("env.eval_sets={AIME: {data: x}}", ["env.eval_sets='AIME'", "metric prefix eval_<name>/"]),
        ("env.eval_sets={big: 3}", ["env.eval_sets.big=3", "dictionary"]),
        ("env.eval_num_workers=0", ["env.eval_num_workers=0", "greater than or equal to 1"]),
    ],
)
def test_bad_eval_sets_name_the_field_and_the_fix(override, needles):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_eval_set_workers_are_named_ray_actors_that_evaluate(ray_local, tiny_model_dir, tmp_path):
    """The Ray path: each set's workers are separate named actors ("eval-<name>-env-<i>"), and an evaluation through
    them reports every set; shutdown kills them all."""
    cfg = config(
        tiny_model_dir, "ray.in_process=false", "env.eval_sets={big: {dim_room: [6, 6]}}", "env.eval_num_workers=2"
    )
    system = System.build(cfg, str(tiny_model_dir), policy_version=0, training=False, start_timeout_s=120)
    try:
        assert system.eval_env_workers is system.env_workers
        named = [ray_local.get_actor(f"eval-big-env-{i}") for i in range(2)]
        assert [ray_local.get(a.ping.remote(), timeout=30) for a in named] == [0, 1]
        t = Trainer(cfg, system, TrainState(), Recorder(), tmp_path, ChatCodec(load_tokenizer(tiny_model_dir)))
        metrics = asyncio.run(asyncio.wait_for(t.evaluate(0), timeout=300))
        resets = sum(ray_local.get(a.stats.remote(), timeout=30)["env/resets"] for a in named)
    finally:
        system.shutdown()
    assert {"eval/success_rate", "eval_big/success_rate"} <= metrics.keys()
    assert resets == 3
    with pytest.raises(ValueError):
        ray_local.get_actor("eval-big-env-0")
