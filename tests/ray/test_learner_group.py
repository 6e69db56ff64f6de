"""LearnerGroup on a local Ray: 1 rank as an actor equals in-process; 2 ranks (DDP and FSDP2 over gloo) give the
1-rank gradient and update for uneven shards, including a mini-batch with an empty shard; checkpoints across modes."""

import pytest
import torch

from actors.learner import LearnerGroup
from spear_ray.config import AlgoConfig, LearnerConfig
from spear_ray.models import load_tokenizer
from tests.unit.learner.batches import random_batch

pytestmark = pytest.mark.ray

VOCAB = 271


def configs(*, ranks=1, strategy="ddp", mini=4, micro=3, mode="clip_cov", max_tokens=None):
    learner = LearnerConfig(
        max_tokens_per_micro_batch=max_tokens,
        num_ranks=ranks,
        strategy=strategy,
        mini_batch_size=mini,
        micro_batch_size=micro,
        lr=1e-3,
        num_cpus_per_rank=0.5,
        torch_threads=1,
    )
    algo = AlgoConfig(preset=None, loss_mode=mode, loss_agg="seq-mean-token-mean", entropy_coef=0.001)
    return learner, algo


def group(path, *, workers, **kw):
    learner, algo = configs(**kw)
    return LearnerGroup(
        str(path), learner=learner, algo=algo, num_workers=workers, temperature=0.8, seed=3, timeout_s=120
    )


@pytest.fixture(scope="module")
def pad_id(tiny_model_dir):
    return load_tokenizer(tiny_model_dir).pad_token_id


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    torch.set_num_threads(1)  # the actors run one thread: same kernels, same bits
    return group(tiny_model_dir, workers=0)


def close(a, b, atol):
    return all(torch.allclose(a[n], b[n], atol=atol, rtol=0) for n in a)


def test_one_rank_actor_equals_in_process(ray_local, tiny_model_dir, pad_id, local):
    batch = random_batch(9, vocab=VOCAB, pad_id=pad_id, seed=1)
    replay = random_batch(4, vocab=VOCAB, pad_id=pad_id, seed=2, replay=True)
    remote = group(tiny_model_dir, workers=1)
    try:
        m_local = local.train_step(batch, replay_batch=replay, sil_weight=0.3, step=1)
        m_remote = remote.train_step(batch, replay_batch=replay, sil_weight=0.3, step=1)
        assert close(local.state_dict(), remote.state_dict(), atol=1e-6)
        for key in ("loss/pg_loss", "loss/entropy", "sil/pg_loss", "learner/grad_norm"):
            assert m_local[key] == pytest.approx(m_remote[key], abs=1e-5), key
        assert m_remote["learner/optimizer_steps"] == 3 and m_remote["sil/optimizer_steps"] == 1
        assert torch.allclose(local.compute_logprobs(batch), remote.compute_logprobs(batch), atol=1e-6)
    finally:
        remote.close()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_match_one_rank(ray_local, tiny_model_dir, pad_id, local, strategy, tmp_path):
    # vanilla PPO: Clip-Cov statistics and picks are per micro-batch and per rank (SPEC 5.2), so they differ by design
    two = group(tiny_model_dir, workers=2, ranks=2, strategy=strategy, mini=8, mode="vanilla")
    try:
        one = group(tiny_model_dir, workers=0, mini=8, mode="vanilla")
        # 7 rows on 2 ranks: shards of 4 and 3, micro-batches 3+1 and 3 (uneven everywhere)
        b7 = random_batch(7, vocab=VOCAB, pad_id=pad_id, seed=4)
        assert close(one.gradients(b7), two.gradients(b7), atol=1e-6)
        # one row on two ranks: rank 1's shard is empty and runs a zero-weighted pass
        b1 = random_batch(1, vocab=VOCAB, pad_id=pad_id, seed=5)
        assert close(one.gradients(b1), two.gradients(b1), atol=1e-6)
        # a full step: mini-batches of 8 and 1 rows; pi_old and log-probs gathered over ranks
        batch = random_batch(9, vocab=VOCAB, pad_id=pad_id, seed=6)
        assert torch.allclose(two.compute_logprobs(batch), one.compute_logprobs(batch), atol=1e-6)
        m1 = one.train_step(batch, step=1)
        m2 = two.train_step(batch, step=1)
        assert m2["learner/optimizer_steps"] == m1["learner/optimizer_steps"] == 2
        assert m2["loss/tokens"] == m1["loss/tokens"]
        assert m2["learner/grad_norm"] == pytest.approx(m1["learner/grad_norm"], rel=1e-5)
        # AdamW's first steps divide by |g|: coordinates with near-zero gradients move by up to lr on rounding noise,
        # so the parameters agree to 1 % of lr (the gradients themselves agree to 1e-6 above)
        a, b = one.state_dict(), two.state_dict()
        worst = max(float((a[n] - b[n]).abs().max()) for n in a)
        assert worst < 1e-5, worst
        # a checkpoint written by 2 ranks, resumed in-process
        two.save(tmp_path / "ckpt")
        back = group(tiny_model_dir, workers=0, mini=8, mode="vanilla")
        assert back.load(tmp_path / "ckpt") == 1
        assert close(back.state_dict(), two.state_dict(), atol=0)
    finally:
        two.close()


def test_resources_that_cannot_exist_are_refused(ray_local, tiny_model_dir):
    learner, algo = configs(ranks=2)
    learner.num_cpus_per_rank = 64
    with pytest.raises(ValueError, match=r"learner.num_cpus_per_rank=64 = 128 CPU requested, the Ray cluster has 4"):
        LearnerGroup(str(tiny_model_dir), learner=learner, algo=algo, timeout_s=30)


def test_two_ranks_with_token_budget_micro_batches_match_one_rank(ray_local, tiny_model_dir, pad_id, local):
    """Dynamic micro-batches on 2 DDP ranks: the ranks pack different numbers of micro-batches (the short one pads
    with zero-weighted passes) and the gradient and log-probs are still the one-rank, fixed-size ones."""
    two = group(tiny_model_dir, workers=2, ranks=2, mini=8, mode="vanilla", max_tokens=24)
    try:
        one = group(tiny_model_dir, workers=0, mini=8, mode="vanilla")
        b7 = random_batch(7, vocab=VOCAB, pad_id=pad_id, seed=4, prompt_len=(2, 12), response_len=(1, 9))
        assert close(one.gradients(b7), two.gradients(b7), atol=1e-6)
        batch = random_batch(9, vocab=VOCAB, pad_id=pad_id, seed=6, prompt_len=(2, 12), response_len=(1, 9))
        assert torch.allclose(two.compute_logprobs(batch), one.compute_logprobs(batch), atol=1e-6)
        m1, m2 = one.train_step(batch, step=1), two.train_step(batch, step=1)
        assert m2["loss/tokens"] == m1["loss/tokens"]
        assert m2["learner/grad_norm"] == pytest.approx(m1["learner/grad_norm"], rel=1e-5)
    finally:
        two.close()
