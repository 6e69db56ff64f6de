"""Weight sync on a local Ray (gloo on 127.0.0.1): 2 learner ranks -> 2 HF generators give the learner's log-probs
and the new version; a SIGKILLed generator fails the next sync fast, by name; a silent one is named by the probe;
an in-process learner syncs too; the group can be rebuilt from the survivors."""

import os
import signal
import time

import pytest
import ray
import torch

from actors.generator import Generator
from actors.learner import LearnerGroup
from actors.weight_sync import WeightSync, WeightSyncReceiverMixin
from spear_ray.config import AlgoConfig, LearnerConfig, WeightSyncConfig
from spear_ray.generation import EngineOptions
from spear_ray.models import load_tokenizer
from spear_ray.weights.group import WeightSyncError
from tests.unit.learner.batches import random_batch

pytestmark = pytest.mark.ray

VOCAB = 271
TIMEOUT = 120


class SyncGenerator(Generator):
    """The generator actor class (it includes WeightSyncReceiverMixin) plus a way to make it stop answering."""

    def block(self, seconds: float) -> None:
        time.sleep(seconds)  # a sync method: holds the actor's event loop, so the actor stops answering


SyncGeneratorActor = ray.remote(SyncGenerator)


def start_generator(path, name):
    actor = SyncGeneratorActor.options(num_cpus=0.5, max_concurrency=100, max_restarts=0, name=name).remote(
        str(path), options=EngineOptions(batch_window_ms=5), torch_threads=1
    )
    ray.get(actor.pid.remote(), timeout=TIMEOUT)
    return actor


def learner_group(path, *, workers):
    learner = LearnerConfig(
        num_ranks=max(workers, 1), mini_batch_size=4, micro_batch_size=2, lr=1e-2, num_cpus_per_rank=0.5
    )
    algo = AlgoConfig(preset=None, loss_mode="vanilla", loss_agg="token-mean", entropy_coef=0.0)
    return LearnerGroup(str(path), learner=learner, algo=algo, num_workers=workers, temperature=1.0, timeout_s=TIMEOUT)


def sync_config(**kw):
    base = dict(bucket_mb=0.05, timeout_s=20.0, refit_check=True, refit_tolerance=1e-5, refit_fail=True)
    return WeightSyncConfig(**{**base, **kw})


def rows(batch):
    P = batch.prompt_width
    for i in range(batch.batch_size):
        n = int(batch.loss_mask[i].sum())
        yield i, batch.input_ids[i, :P][batch.attention_mask[i, :P]].tolist(), batch.input_ids[i, P : P + n].tolist()


def generator_logprobs(gen, batch):
    refs = [gen.compute_logprobs.remote(p, r, temperature=1.0) for _, p, r in rows(batch)]
    return ray.get(refs, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def pad_id(tiny_model_dir):
    return load_tokenizer(tiny_model_dir).pad_token_id


def test_two_learner_ranks_to_two_generators_then_a_killed_generator(ray_local, tiny_model_dir, pad_id):
    learner = learner_group(tiny_model_dir, workers=2)
    gens = [start_generator(tiny_model_dir, f"ws-gen-{i}") for i in range(2)]
    assert issubclass(Generator, WeightSyncReceiverMixin)
    try:
        sync = WeightSync(learner, gens, config=sync_config(), names=["generator-0", "generator-1"])
        address = sync.setup()
        # the members connect to learner rank 0's node address: loopback on a one-node cluster
        assert address.world_size == 3 and address.host == "127.0.0.1"
        assert learner.rendezvous[0] == "127.0.0.1" and learner.rendezvous[1] > 0
        assert address.members == ("learner-0", "generator-0", "generator-1")
        assert sync.plan.num_buckets > 10  # 1.7 MB of float32 in 50 KiB buckets, the embedding split across many
        batch = random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=1)
        learner.train_step(batch, step=1)
        learner.train_step(random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=2), step=2)
        expected = learner.compute_logprobs(batch)
        stale = generator_logprobs(gens[0], batch)
        assert max(float((torch.tensor(lp) - expected[i, : len(lp)]).abs().max()) for i, lp in enumerate(stale)) > 1e-3

        metrics = sync.sync(version=1)
        assert sync.version == 1
        assert metrics["weight_sync/refit_max_abs_diff"] <= 1e-5
        assert metrics["weight_sync/buckets"] == sync.plan.num_buckets and metrics["weight_sync/gbps"] > 0
        for gen in gens:
            assert ray.get(gen.policy_version.remote(), timeout=TIMEOUT) == 1
            for (i, _, _), lp in zip(rows(batch), generator_logprobs(gen, batch)):
                assert torch.allclose(torch.tensor(lp), expected[i, : len(lp)], atol=1e-5, rtol=0), i

        # a generator process dies (SIGKILL, no cleanup): the next sync fails fast and names it
        pid = ray.get(gens[1].pid.remote(), timeout=TIMEOUT)
        os.kill(pid, signal.SIGKILL)
        learner.train_step(batch, step=3)
        t0 = time.monotonic()
        with pytest.raises(WeightSyncError, match=r"weight sync to version 2 failed: generator-1 is dead") as err:
            sync.sync(version=2)
        print("\nKILLED:", err.value)
        assert time.monotonic() - t0 < sync.config.timeout_s
        assert sync.version == 1  # not bumped: not every generator acknowledged
        assert ray.get(gens[0].policy_version.remote(), timeout=TIMEOUT) in (1, 2)

        # the survivors form a new group and sync again
        again = WeightSync(learner, gens[:1], config=sync_config(), names=["generator-0"])
        again.setup()
        again.sync(version=3)
        assert ray.get(gens[0].policy_version.remote(), timeout=TIMEOUT) == 3
        expected = learner.compute_logprobs(batch)
        for (i, _, _), lp in zip(rows(batch), generator_logprobs(gens[0], batch)):
            assert torch.allclose(torch.tensor(lp), expected[i, : len(lp)], atol=1e-5, rtol=0), i
        again.close()
    finally:
        learner.close()
        for g in gens:
            ray.kill(g)


def test_unresponsive_generator_is_named_within_the_timeout(ray_local, tiny_model_dir):
    learner = learner_group(tiny_model_dir, workers=0)  # in-process learner, Ray generators
    gens = [start_generator(tiny_model_dir, f"ws-slow-{i}") for i in range(2)]
    try:
        ok = WeightSync(learner, gens[:1], config=sync_config(), names=["generator-0"])
        ok.setup()
        assert ok.sync(version=1)["weight_sync/refit_max_abs_diff"] <= 1e-5
        ok.close()

        gens[1].block.remote(60.0)  # generator-1 stops answering
        sync = WeightSync(learner, gens, config=sync_config(timeout_s=3.0), probe_timeout_s=2.0, grace_s=2.0)
        t0 = time.monotonic()
        with pytest.raises(WeightSyncError, match=r"generator-1 is unresponsive \(no answer in 2 s\)") as err:
            sync.setup()
        print("\nSILENT:", err.value)
        assert time.monotonic() - t0 < 3.0 + 2.0 + 2.0 + 5.0  # timeout + grace + probe + slack
    finally:
        learner.close()
        for g in gens:
            ray.kill(g)


def test_fsdp2_learner_to_a_bfloat16_generator(ray_local, tiny_model_dir, pad_id):
    """Sharded parameters are gathered by both ranks and cast to the generator's dtype on the wire (packed path)."""
    from spear_ray.generation import teacher_forced_logprobs
    from spear_ray.models import load_model

    learner = LearnerGroup(
        str(tiny_model_dir),
        learner=LearnerConfig(
            num_ranks=2, strategy="fsdp2", mini_batch_size=4, micro_batch_size=2, lr=1e-2, num_cpus_per_rank=0.5
        ),
        algo=AlgoConfig(preset=None, loss_mode="vanilla", entropy_coef=0.0),
        timeout_s=TIMEOUT,
    )
    gen = SyncGeneratorActor.options(num_cpus=0.5, max_concurrency=100, max_restarts=0, name="ws-bf16").remote(
        str(tiny_model_dir), options=EngineOptions(dtype="bfloat16", batch_window_ms=5), torch_threads=1
    )
    try:
        sync = WeightSync(learner, [gen], config=sync_config(refit_tolerance=0.1), names=["generator-bf16"])
        sync.setup()
        assert {t.dtype for t in sync.plan.tensors} == {torch.bfloat16}
        learner.train_step(random_batch(8, vocab=VOCAB, pad_id=pad_id, seed=3), step=1)
        metrics = sync.sync(version=1)
        assert 0 < metrics["weight_sync/refit_max_abs_diff"] <= 0.1  # bf16 generator vs fp32 learner
        # the generator holds exactly the learner's weights rounded to bf16: same log-probs as a local bf16 copy
        local = load_model(tiny_model_dir, dtype="bfloat16")
        local.load_state_dict({n: t.to(torch.bfloat16) for n, t in learner.state_dict().items()}, strict=False)
        prompt, response = list(range(5, 20)), list(range(30, 40))
        want = teacher_forced_logprobs(local, prompt, response, temperature=1.0)
        got = ray.get(gen.compute_logprobs.remote(prompt, response, temperature=1.0), timeout=TIMEOUT)
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-6, rtol=0)
        sync.close()
    finally:
        learner.close()
        ray.kill(gen)
