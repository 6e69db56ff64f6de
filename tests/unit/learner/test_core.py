"""LearnerCore on one rank (no process group): log-probs, micro-batch gradient equivalence, SIL weight 0, the
non-finite skip, truncated IS, determinism, and an exact save/load resume."""

import math

import pytest
import torch

from spear_ray.config import AlgoConfig, LearnerConfig
from spear_ray.generation.logprobs import teacher_forced_logprobs
from spear_ray.learner.core import LearnerCore
from spear_ray.learner.logprobs import forward_response
from spear_ray.learner.sharding import (
    micro_batches_per_rank,
    micro_loss_scale,
    row_lengths,
    shard_rows,
    step_seed,
    token_budget_micro_batches,
)
from spear_ray.models import load_model, load_tokenizer
from tests.unit.learner.batches import random_batch

VOCAB = 271


@pytest.fixture(scope="module")
def pad_id(tiny_model_dir):
    return load_tokenizer(tiny_model_dir).pad_token_id


def make_core(path, *, mini=8, micro=8, agg="seq-mean-token-mean", mode="vanilla", entropy=0.0, max_tokens=None, **kw):
    learner = LearnerConfig(
        mini_batch_size=mini, micro_batch_size=micro, lr=1e-3, max_tokens_per_micro_batch=max_tokens
    )
    algo = AlgoConfig(preset=None, loss_mode=mode, loss_agg=agg, entropy_coef=entropy, clip_high=0.28)
    return LearnerCore(str(path), learner=learner, algo=algo, temperature=0.9, **kw)


def params(core):
    return {n: p.detach().clone() for n, p in core.model.named_parameters()}


# ------------------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize("rows,world", [(8, 2), (7, 2), (5, 3), (1, 2), (10, 4)])
def test_shard_rows_cover_each_row_once_largest_first(rows, world):
    shards = [shard_rows(rows, rank=r, world_size=world) for r in range(world)]
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(rows))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_scale_sums_to_one_over_ranks_and_micro_batches():
    # M = 7 rows on W = 2 ranks (4 + 3), micro 3: rank 0 -> 3 + 1, rank 1 -> 3; the mean over ranks of the sum of
    # scales is (3*2/7 + 1*2/7 + 3*2/7) / 2 = 1
    total = sum(micro_loss_scale(b, mini_rows=7, world_size=2) for b in (3, 1, 3)) / 2
    assert total == pytest.approx(1.0)
    assert micro_batches_per_rank(7, world_size=2, micro_batch_size=3) == 2
    assert micro_batches_per_rank(1, world_size=4, micro_batch_size=3) == 1


def test_token_budget_packs_longest_first_within_the_budget():
    # rows (prompt, response): totals 7, 12, 5, 9, 3, 12
    p, r = [3, 10, 2, 4, 1, 2], [4, 2, 3, 5, 2, 10]
    plan = token_budget_micro_batches(p, r, max_tokens=24)
    assert sorted(i for mb in plan for i in mb) == list(range(6))
    for mb in plan:
        width = max(p[i] for i in mb) + max(r[i] for i in mb)
        assert len(mb) * width <= 24 and mb == sorted(mb)
    # longest first (1, 5, 3, 0, 2, 4): rows 1 and 5 would pad to 10 + 10 per row (40), 5 and 3 to 4 + 10 (28);
    # 3 and 0 fit (2 x 9 = 18), a third row would not (27); 2 and 4 share the last one
    assert plan == [[1], [5], [0, 3], [2, 4]]
    assert token_budget_micro_batches(p, r, max_tokens=1000) == [list(range(6))]
    assert token_budget_micro_batches([], [], max_tokens=5) == []


def test_token_budget_refuses_a_row_longer_than_the_budget():
    with pytest.raises(ValueError, match=r"max_tokens_per_micro_batch=10 is below one sample of 12 tokens"):
        token_budget_micro_batches([3, 10], [4, 2], max_tokens=10)


def test_step_seed_differs_by_rank_and_step():
    seeds = {step_seed(0, rank=r, step=s) for r in range(4) for s in range(50)}
    assert len(seeds) == 200 and all(0 <= x < 2**63 for x in seeds)


# ------------------------------------------------------------------------------------------ log-probs


def test_batch_logprobs_equal_unpadded_teacher_forcing(tiny_model_dir, pad_id):
    core = make_core(tiny_model_dir)
    batch = random_batch(6, vocab=VOCAB, pad_id=pad_id, seed=3)
    lp = core.compute_logprobs(batch)
    model = load_model(tiny_model_dir)
    P = batch.prompt_width
    for i in range(batch.batch_size):
        prompt = batch.input_ids[i, :P][batch.attention_mask[i, :P]].tolist()
        n = int(batch.loss_mask[i].sum())
        resp = batch.input_ids[i, P : P + n].tolist()
        ref = teacher_forced_logprobs(model, prompt, resp, temperature=0.9)
        assert torch.allclose(lp[i, :n], torch.tensor(ref), atol=1e-5, rtol=0), i
        assert torch.all(lp[i, n:] == 0)


def test_entropy_at_temperature(tiny_model_dir, pad_id):
    model = load_model(tiny_model_dir)
    batch = random_batch(3, vocab=VOCAB, pad_id=pad_id, seed=4)
    with torch.no_grad():
        res = forward_response(model, batch, temperature=0.5, with_entropy=True)
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(), position_ids=batch.position_ids
        ).logits
    P, R = batch.prompt_width, batch.response_width
    p = torch.softmax(logits[:, P - 1 : P + R - 1].float() / 0.5, dim=-1)
    ref = -(p * p.log()).sum(-1)
    m = batch.loss_mask
    assert torch.allclose(res.entropy[m], ref[m], atol=1e-5)


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("micro", [1, 3, 5])
def test_micro_batch_gradient_equals_full_batch_gradient(tiny_model_dir, pad_id, agg, micro):
    batch = random_batch(7, vocab=VOCAB, pad_id=pad_id, seed=5)
    full = make_core(tiny_model_dir, mini=8, micro=8, agg=agg, entropy=0.01).gradients(batch)
    split = make_core(tiny_model_dir, mini=8, micro=micro, agg=agg, entropy=0.01).gradients(batch)
    assert any(float(g.abs().sum()) > 0 for g in full.values())
    for name in full:
        assert torch.allclose(split[name], full[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("max_tokens", [16, 24, 40])
def test_token_budget_micro_batches_give_the_full_batch_gradient(tiny_model_dir, pad_id, agg, max_tokens):
    batch = random_batch(7, vocab=VOCAB, pad_id=pad_id, seed=5, prompt_len=(2, 10), response_len=(1, 7))
    p, r = row_lengths(batch.attention_mask, batch.prompt_width)
    plan = token_budget_micro_batches(p, r, max_tokens=max_tokens)
    assert 1 < len(plan) < 7 or max_tokens == 40  # really packed: neither one row each nor (below 40) one pass
    full = make_core(tiny_model_dir, mini=8, micro=8, agg=agg, entropy=0.01).gradients(batch)
    dyn = make_core(tiny_model_dir, mini=8, agg=agg, entropy=0.01, max_tokens=max_tokens)
    split = dyn.gradients(batch)
    for name in full:
        assert torch.allclose(split[name], full[name], atol=1e-6, rtol=1e-4), name
    fixed_lp = make_core(tiny_model_dir, micro=2).compute_logprobs(batch)
    assert torch.allclose(dyn.compute_logprobs(batch), fixed_lp, atol=1e-6)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_token_sum_norm_is_scaled_per_micro_batch_as_in_verl(tiny_model_dir, pad_id, micro):
    # seq-mean-token-sum-norm is a sum (sum(l m) / L, SPEC 5.5), not a mean: each micro-batch's value is scaled by
    # B_micro / M like every mode, so (as verl's loss / GA) the gradient is micro / M times the one-pass gradient
    batch = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=5)
    agg = "seq-mean-token-sum-norm"
    full = make_core(tiny_model_dir, mini=8, micro=8, agg=agg).gradients(batch)
    split = make_core(tiny_model_dir, mini=8, micro=micro, agg=agg).gradients(batch)
    for name in full:
        assert torch.allclose(split[name], full[name] * (micro / 8), atol=1e-6, rtol=1e-4), name


def test_token_mean_is_per_micro_batch(tiny_model_dir, pad_id):
    # token-mean aggregates per micro-batch (SPEC 5.5): equal only when every micro-batch has the same token count
    batch = random_batch(4, vocab=VOCAB, pad_id=pad_id, seed=6, response_len=(4, 4))
    full = make_core(tiny_model_dir, mini=4, micro=4, agg="token-mean").gradients(batch)
    split = make_core(tiny_model_dir, mini=4, micro=2, agg="token-mean").gradients(batch)
    for name in full:
        assert torch.allclose(split[name], full[name], atol=1e-6, rtol=1e-4), name


def test_replay_gradient_scales_with_sil_weight(tiny_model_dir, pad_id):
    replay = random_batch(4, vocab=VOCAB, pad_id=pad_id, seed=7, replay=True)
    core = make_core(tiny_model_dir)
    g1 = core.gradients(replay, replay=True, weight=1.0)
    g3 = core.gradients(replay, replay=True, weight=0.25)
    for name in g1:
        assert torch.allclose(g3[name], 0.25 * g1[name], atol=1e-7, rtol=1e-5), name


# ------------------------------------------------------------------------------------------ train_step


def test_sil_weight_zero_equals_no_replay_batch(tiny_model_dir, pad_id):
    batch = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=8)
    replay = random_batch(4, vocab=VOCAB, pad_id=pad_id, seed=9, replay=True)
    a, b, c = (make_core(tiny_model_dir, mini=4, micro=2, mode="clip_cov") for _ in range(3))
    ma = a.train_step(batch, step=1)
    mb = b.train_step(batch, replay_batch=replay, sil_weight=0.0, step=1)
    mc = c.train_step(batch, replay_batch=replay, sil_weight=0.5, step=1)
    pa, pb, pc = params(a), params(b), params(c)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert not all(torch.equal(pa[n], pc[n]) for n in pa)
    assert ma["learner/optimizer_steps"] == mb["learner/optimizer_steps"] == 2
    assert mb["sil/optimizer_steps"] == 0 and mc["sil/optimizer_steps"] == 1 and mc["sil/weight"] == 0.5
    for key in (
        "loss/total",
        "loss/pg_loss",
        "loss/entropy",
        "loss/clip_frac",
        "loss/approx_kl",
        "loss/tokens",
        "learner/grad_norm",
        "learner/skipped_steps",
        "time/learner_step_s",
        "sil/total",
    ):
        assert key in mc and math.isfinite(mc[key]), key


def test_given_on_policy_old_logprobs_give_the_same_update(tiny_model_dir, pad_id):
    # the driver computes pi_old once (it also stores it with the replay samples) and hands it to train_step
    batch = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=12)
    a, b = (make_core(tiny_model_dir, mini=4, micro=2, mode="clip_cov") for _ in range(2))
    given = batch.select(list(range(8)))
    given.old_logprobs = b.compute_logprobs(batch)
    ma, mb = a.train_step(batch, step=1), b.train_step(given, step=1)
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert ma["loss/pg_loss"] == mb["loss/pg_loss"]


def test_non_finite_gradient_skips_the_step(tiny_model_dir, pad_id):
    core = make_core(tiny_model_dir, mini=8, micro=4)
    before = params(core)
    bad = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=10)
    bad.advantages[2] = float("nan")
    m = core.train_step(bad, step=1)
    assert m["learner/skipped_steps"] == 1 and m["learner/optimizer_steps"] == 0
    assert not math.isfinite(m["learner/grad_norm_max"])
    after = params(core)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert core.optimizer.state == {} or all(int(s["step"]) == 0 for s in core.optimizer.state.values())
    good = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=11)
    m2 = core.train_step(good, step=2)
    assert m2["learner/skipped_steps"] == 0 and m2["learner/optimizer_steps"] == 1
    assert math.isfinite(m2["learner/grad_norm"])


def test_truncated_is_weight_is_one_for_an_up_to_date_generator(tiny_model_dir, pad_id):
    batch = random_batch(6, vocab=VOCAB, pad_id=pad_id, seed=12)
    ref = make_core(tiny_model_dir, mini=6, micro=3)
    batch.behavior_logprobs = ref.compute_logprobs(batch)  # pi_behaviour == pi_old: w = exp(0) = 1 exactly
    with_is = make_core(tiny_model_dir, mini=6, micro=3, is_cap=2.0)
    m = with_is.train_step(batch, step=1)
    ref.train_step(batch, step=1)
    assert m["loss/is_weight_mean"] == pytest.approx(1.0)
    pa, pb = params(ref), params(with_is)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    stale = random_batch(6, vocab=VOCAB, pad_id=pad_id, seed=12)
    stale.behavior_logprobs = make_core(tiny_model_dir).compute_logprobs(stale) - 5.0  # w = min(e^5, 2) = C
    m2 = make_core(tiny_model_dir, mini=6, micro=3, is_cap=2.0).train_step(stale, step=1)
    assert m2["loss/is_weight_mean"] == pytest.approx(2.0)


def test_clip_cov_steps_are_deterministic(tiny_model_dir, pad_id):
    batch = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=13)
    runs = []
    for _ in range(2):
        core = make_core(tiny_model_dir, mini=4, micro=2, mode="clip_cov", seed=7)
        core.algo.clip_cov.ratio = 0.2
        core.algo.clip_cov.lb, core.algo.clip_cov.ub = -100.0, 100.0
        m = core.train_step(batch, step=3)
        runs.append((params(core), m["loss/clip_cov_detached"]))
    assert runs[0][1] > 0 and runs[0][1] == runs[1][1]
    assert all(torch.equal(runs[0][0][n], runs[1][0][n]) for n in runs[0][0])


def test_save_load_resume_is_bit_identical(tiny_model_dir, pad_id, tmp_path):
    b1 = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=14)
    b2 = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=15)
    a = make_core(tiny_model_dir, mini=4, micro=2, mode="clip_cov", entropy=0.001)
    a.train_step(b1, step=1)
    a.save(tmp_path / "ckpt")
    a.train_step(b2, step=2)
    b = make_core(tiny_model_dir, mini=4, micro=2, mode="clip_cov", entropy=0.001)
    assert b.load(tmp_path / "ckpt") == 1 and b.optimizer_steps == 2
    b.train_step(b2, step=2)
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    # the folder is a plain Hugging Face model: transformers reads it, tokenizer included
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    c = make_core(tiny_model_dir)
    c.load(tmp_path / "ckpt")
    assert all(torch.equal(p, dict(c.model.named_parameters())[n]) for n, p in hf.named_parameters())
    assert AutoTokenizer.from_pretrained(tmp_path / "ckpt").pad_token_id == pad_id


def test_batches_without_advantages_are_rejected(tiny_model_dir, pad_id):
    core = make_core(tiny_model_dir)
    batch = random_batch(2, vocab=VOCAB, pad_id=pad_id)
    batch.advantages = None
    with pytest.raises(ValueError, match="advantages are not set"):
        core.train_step(batch, step=1)
    replay = random_batch(2, vocab=VOCAB, pad_id=pad_id, replay=True)
    replay.old_logprobs = None
    with pytest.raises(ValueError, match="old_logprobs"):
        core.train_step(random_batch(2, vocab=VOCAB, pad_id=pad_id), replay_batch=replay, sil_weight=1.0, step=1)


@pytest.mark.parametrize(
    "mode,staleness,expected", [("auto", 0, None), ("auto", 2, 2.0), ("on", 0, 2.0), ("off", 3, None)]
)
def test_truncated_is_cap_resolution(mode, staleness, expected):
    from spear_ray.learner.core import resolve_is_cap

    algo = AlgoConfig(preset=None)
    algo.truncated_is.enabled = mode
    assert resolve_is_cap(algo, max_staleness=staleness) == expected


def test_gradient_checkpointing_gives_the_same_gradient(tiny_model_dir, pad_id):
    batch = random_batch(4, vocab=VOCAB, pad_id=pad_id, seed=16)
    plain = make_core(tiny_model_dir, entropy=0.01).gradients(batch)
    ckpt = make_core(tiny_model_dir, entropy=0.01, gradient_checkpointing=True)
    assert ckpt.model.is_gradient_checkpointing
    grads = ckpt.gradients(batch)
    assert all(torch.allclose(grads[n], plain[n], atol=1e-6, rtol=1e-5) for n in plain)
