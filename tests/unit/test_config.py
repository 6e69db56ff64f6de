"""Config loading: layering (defaults < preset < YAML < CLI), presets vs SPEAR_SPEC section 13, error messages,
the saved resolved config, and every YAML in configs/ validating."""

from pathlib import Path

import pytest
import yaml

from spear_ray.cli import main
from spear_ray.config import Config, ConfigError, load_config
from spear_ray.presets import PRESETS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


# The variant table of SPEAR_SPEC section 13 (agent scripts), one row per preset.
SECTION_13 = {
    #             adv      clip_high norm_std loss_agg                   filters ratio  loss_mode  sil    tool
    "grpo": ("grpo", 0.2, True, "token-mean", False, 1.0, "vanilla", False, "none"),
    "drbot_grpo": ("grpo", 0.28, False, "seq-mean-token-sum-norm", True, 0.75, "vanilla", False, "none"),
    "spear_grpo": ("grpo", 0.28, False, "seq-mean-token-sum-norm", True, 0.75, "clip_cov", True, "cosine"),
    "gigpo": ("gigpo", 0.2, True, "token-mean", False, 1.0, "vanilla", False, "none"),
    "drbot_gigpo": ("gigpo", 0.28, False, "seq-mean-token-sum-norm", True, 0.75, "vanilla", False, "none"),
    "spear_gigpo": ("gigpo", 0.28, False, "seq-mean-token-sum-norm", True, 0.75, "clip_cov", True, "cosine"),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_section_13(preset, tmp_path):
    # a YAML file, not `load_config(None, ...)`: with no file the CPU default layer (presets.CPU_DEFAULT) applies
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"algo": {"preset": preset}, "env": {"name": "sokoban"}}))
    cfg = load_config(f)
    a = cfg.algo
    row = (
        a.adv_estimator,
        a.clip_high,
        a.norm_adv_by_std,
        a.loss_agg,
        a.filters.void,
        a.filters.group_filter_ratio,
        a.loss_mode,
        a.sil.enabled,
        a.tool_bonus.mode,
    )
    assert row == SECTION_13[preset]
    # Part A D2 defaults common to every preset
    assert (a.clip_low, a.dual_clip_c, a.entropy_coef, a.invalid_action_penalty) == (0.2, 10.0, 0.001, 0.1)
    assert (a.clip_cov.ratio, a.clip_cov.lb, a.clip_cov.ub) == (2e-4, 1.0, 5.0)
    assert (a.replay_clip_cov.ratio, a.replay_clip_cov.lb, a.replay_clip_cov.ub) == (0.02, 2.0, 60.0)
    s = a.sil
    assert (s.warmup_steps, s.buffer_size, s.tolerate_steps, s.baseline_window, s.trigger_factor, s.alpha) == (
        200,
        2048,
        5,
        10240,
        1.5,
        0.0,
    )
    assert (a.tool_bonus.decay_steps, a.gamma, a.gigpo_step_weight, a.gigpo_norm_by_std) == (200, 0.95, 1.0, True)


def test_layering_defaults_preset_yaml_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"algo": {"preset": "drbot_grpo", "clip_high": 0.3}, "learner": {"lr": 1e-5}}))
    cfg = load_config(f, ["learner.lr=2e-5", "env.group_size=4"])
    assert cfg.algo.clip_high == 0.3  # YAML over preset
    assert cfg.algo.loss_agg == "seq-mean-token-sum-norm"  # from the preset
    assert cfg.learner.lr == 2e-5  # CLI over YAML
    assert cfg.env.group_size == 4
    assert cfg.algo.loss_mode == "vanilla"  # the preset's, not the default preset's


def test_null_preset_gives_plain_field_defaults():
    cfg = load_config(None, ["algo.preset=null"])
    assert cfg.algo.preset is None and cfg.algo.loss_mode == "vanilla" and not cfg.algo.sil.enabled


def test_defaults_are_the_cpu_spear_run():
    cfg = load_config()
    assert cfg.model.path == "tiny" and cfg.algo.preset == "spear_grpo" and cfg.algo.sil.enabled
    # the CPU layer; a config file starts from the paper's values
    assert (cfg.steps, cfg.algo.sil.buffer_size, cfg.algo.sil.warmup_steps, cfg.algo.tool_bonus.decay_steps) == (
        100,
        32,
        100,
        100,
    )
    paper = Config()
    assert (paper.algo.sil.buffer_size, paper.algo.sil.warmup_steps, paper.algo.tool_bonus.decay_steps) == (
        2048,
        200,
        200,
    )
    assert cfg.generator.backend == "hf" and cfg.learner.backend == "auto"


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("algo.clip_high=abc", ["algo.clip_high='abc'", "valid number", ">= 0"]),
        ("algo.clip_hihg=0.3", ["algo.clip_hihg", "unknown key", "did you mean 'algo.clip_high'"]),
        ("learner.lr=-1", ["learner.lr=-1", "greater than 0"]),
        ("algo.loss_agg=mean", ["algo.loss_agg='mean'", "token-mean"]),
        ("learner.micro_batch_size=999", ["learner.micro_batch_size=999", "mini_batch_size"]),
        ("algo.clip_cov.lb=9", ["algo.clip_cov", "lb=9.0 must be < ub=5.0"]),
        ("algo.adv_estimator=gigpo", ["algo.adv_estimator='gigpo'", "step granularity", "calculator"]),
        ("env.name=nope", ["env.name='nope'", "unknown env"]),
        ("learner.backend=nccl", ["learner.backend='nccl'", "num_gpus_per_rank"]),
        ("model.tiny.num_heads=3", ["model.tiny.num_heads=3", "must divide"]),
        ("eval.top_p=0", ["eval.top_p", "greater than 0"]),
        (
            "learner.max_tokens_per_micro_batch=100",
            ["learner.max_tokens_per_micro_batch=100", "longest possible sample", "raise it to >="],
        ),
        ("eval.top_k=-2", ["eval.top_k", "greater than or equal to -1"]),
    ],
)
def test_bad_values_name_key_value_and_fix(override, needles):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_bad_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="algo.preset='ppo' is not a preset"):
        load_config(None, ["algo.preset=ppo"])
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(None, ["algo.clip_high"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["algo.preset=spear_gigpo", "env.name=sokoban", "seed=3"])
    path = cfg.save(tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg


def test_a_saved_config_with_a_real_model_loads_back(tmp_path):
    # the resolved file lists every field (model.warm_start included, ignored for a non-tiny model): resume reads it
    cfg = load_config(None, ["model.path=/models/qwen", "env.name=sokoban", "algo.preset=grpo"])
    assert load_config(cfg.save(tmp_path / "config.yaml")) == cfg


def test_cli_dry_run_prints_and_saves(tmp_path, capsys):
    rc = main(["train", "--dry-run", "--run-dir", str(tmp_path / "r"), "--steps", "7", "algo.clip_high=0.3"])
    assert rc == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["steps"] == 7 and printed["algo"]["clip_high"] == 0.3
    assert Config.model_validate(yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())).steps == 7


def test_cli_bad_value_exits_2_with_message(capsys):
    rc = main(["train", "--dry-run", "algo.clip_high=abc"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "algo.clip_high='abc'" in err and "valid number" in err


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_yaml_in_configs_validates(path):
    load_config(path)
