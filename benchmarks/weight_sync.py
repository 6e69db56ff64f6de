"""Weight-sync bandwidth: the bucketed path against one raw `broadcast` of a flat tensor of the same size, same
backend (gloo), same two processes, same run, interleaved.

A ~100M-parameter Qwen2 (from_config, random weights, no download) lives in both processes; rank 0 packs its
parameters bucket by bucket and broadcasts them. `zero_copy`: what WeightSender/EngineReceiver do when dtypes
match: the sender's parameters live in the bucket layout (flat_params.adopt_flat_layout), so buckets go out without
packing, and each lands in the receiver's staging buffer, ending as named tensor views. `packed`: buckets of small
tensors are packed (one copy) and every chunk is copied into the receiver model's parameters (one copy): the path
when the receiver unpacks into a model's own parameters (the vLLM worker path). `cast_bf16`: the sender's fp32
parameters are cast to bf16 while packing and land in the receiver's bf16 staging buffer (what WeightSender and
EngineReceiver do for an fp32 learner and a bf16 generator); its baseline is a raw broadcast of a flat bf16 tensor
of the same number of elements (the same bytes on the wire). Each timed run ends with a 1-element broadcast back
from rank 1, so both sides are timed end to end.
Run: `python benchmarks/weight_sync.py [--bucket-mb 16 64 256] [--repeats 5] [--json out.json]`.
"""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result, parser, report  # noqa: E402

from spear_ray.weights.buckets import MIB, flat_size, flat_views, new_buffers, plan_buckets, specs_of  # noqa: E402
from spear_ray.weights.flat_params import adopt_flat_layout  # noqa: E402
from spear_ray.weights.group import GroupAddress, join_group, open_store  # noqa: E402
from spear_ray.weights.sync import receive_flat, receive_weights, send_flat, send_weights  # noqa: E402


def make_model(layers: int) -> torch.nn.Module:
    """A Qwen2 of ~100M parameters at 12 layers (hidden 768, MLP 2048, vocab 32000, tied embeddings)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=12,
        num_key_value_heads=12,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


KINDS = ("zero_copy", "packed", "cast_bf16")
BASELINE = {"zero_copy": "raw", "packed": "raw", "cast_bf16": "raw_bf16"}  # same bytes on the wire


def schedule(bucket_mbs: list[float], repeats: int) -> list[tuple[str, float, bool]]:
    """The run order both ranks follow: (kind, bucket MiB, timed). One block per bucket size (the sender adopts
    that size's flat layout once, as WeightSender does), inside it rounds of raw and bucketed runs interleaved;
    the first round of a block is the warm-up."""
    out = []
    for mb in bucket_mbs:
        one = ("raw", "zero_copy", "packed", "raw_bf16", "cast_bf16")
        out += [(kind, mb, r > 0) for r in range(repeats + 1) for kind in one]
    return out


def run(rank: int, address: GroupAddress, store, args) -> dict[tuple[str, float], list[float]]:
    """Rank 0 sends, rank 1 receives, both follow `schedule`; returns seconds per (kind, bucket MiB)."""
    torch.set_num_threads(1)
    model = make_model(args.layers)
    named = list(model.named_parameters())
    params = dict(named)
    total = sum(p.numel() for _, p in named)
    group = join_group(address, rank=rank, store=store)
    flat = torch.empty(total, dtype=torch.float32)  # the raw baseline: already one flat tensor
    if rank == 0:
        torch.cat([p.detach().reshape(-1) for _, p in named], out=flat)
    flat_bf16 = flat.to(torch.bfloat16)
    plans = {mb: plan_buckets(specs_of(named), bucket_bytes=int(mb * MIB)) for mb in args.bucket_mb}
    buffers = {mb: new_buffers(plan) for mb, plan in plans.items()}  # what WeightSender keeps across syncs
    staging = {mb: torch.empty(flat_size(plan), dtype=torch.uint8) for mb, plan in plans.items()}
    bf16 = {
        mb: plan_buckets(specs_of(named, dtype=torch.bfloat16), bucket_bytes=int(mb * MIB)) for mb in args.bucket_mb
    }
    bf16_buffers = {mb: new_buffers(plan) for mb, plan in bf16.items()}
    bf16_staging = {mb: torch.empty(flat_size(plan), dtype=torch.uint8) for mb, plan in bf16.items()}
    done = torch.zeros(1)
    data = {n: p.data for n, p in named}  # the receiver model's parameters (packed kind: chunks land in them)
    layout_of = None  # the sender's parameters live in this bucket size's layout (WeightSender.make_plan)

    times: dict[tuple[str, float], list[float]] = {}
    for kind, mb, timed in schedule(args.bucket_mb, args.repeats):
        if rank == 0 and layout_of != mb:  # untimed, once per bucket size
            sender_flat = adopt_flat_layout(model, plans[mb])
            layout_of = mb
        group.barrier()
        t0 = time.perf_counter()
        if kind == "raw":
            group.broadcast(flat, src=0, what="raw broadcast")
        elif kind == "raw_bf16":
            group.broadcast(flat_bf16, src=0, what="raw bf16 broadcast")
        elif kind == "cast_bf16":
            if rank == 0:  # the fp32 parameters (outside the fp32 flat layout) cast into bf16 buckets
                send_weights(bf16[mb], group, lambda n: params[n], buffers=bf16_buffers[mb])
            else:
                receive_flat(bf16[mb], group, bf16_staging[mb])
                flat_views(bf16[mb], bf16_staging[mb])
        elif kind == "zero_copy":
            if rank == 0:
                send_flat(plans[mb], group, sender_flat)
            else:
                receive_flat(plans[mb], group, staging[mb])
                flat_views(plans[mb], staging[mb])  # the named tensors a generator then loads
        elif rank == 0:
            send_weights(plans[mb], group, lambda n: params[n], buffers=buffers[mb])
        else:
            receive_weights(plans[mb], group, lambda _: None, dest=data.get, buffers=buffers[mb])
        group.broadcast(done, src=1, what="done")
        if timed:
            times.setdefault((kind, mb), []).append(time.perf_counter() - t0)
    group.destroy()
    return times


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bucket-mb", type=float, nargs="+", default=[16.0, 64.0, 256.0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--role", default="sender", help=argparse_hidden())
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    members = ("sender", "receiver")
    if args.role == "receiver":
        address = GroupAddress("127.0.0.1", args.port, 2, "gloo", 300.0, "bench", members)
        run(1, address, None, args)
        return
    store = open_store(world_size=2, timeout_s=300)
    address = GroupAddress("127.0.0.1", store.port, 2, "gloo", 300.0, "bench", members)
    cmd = [sys.executable, __file__, "--role", "receiver", "--port", str(store.port), "--repeats", str(args.repeats)]
    cmd += ["--layers", str(args.layers), "--bucket-mb", *map(str, args.bucket_mb)]
    receiver = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    times = run(0, address, store, args)
    if receiver.wait(timeout=600) != 0:
        raise RuntimeError(f"the receiver process failed with exit code {receiver.returncode}")
    nbytes = sum(p.numel() * 4 for p in make_model(args.layers).parameters())
    wire = {"raw": nbytes, "raw_bf16": nbytes // 2}
    results = []
    for mb in args.bucket_mb:
        for base in ("raw", "raw_bf16"):
            rate = wire[base] / statistics.median(times[(base, mb)]) / 1e9
            results.append(Result(f"{base}_broadcast_flat_{mb:g}MiB_block", rate, "GB/s", None, None, "baseline"))
        for kind in KINDS:
            t, base_t = times[(kind, mb)], times[(BASELINE[kind], mb)]
            size = wire[BASELINE[kind]]
            rate, raw = size / statistics.median(t) / 1e9, size / statistics.median(base_t) / 1e9
            # the ratio pairs each run with the raw run of the same round (a second apart): load on a shared
            # machine changes over minutes, so per-round ratios are steadier than a ratio of medians
            ratio = statistics.median(r / k for r, k in zip(base_t, t))
            name = f"bucketed_{mb:g}MiB_{kind}"
            results.append(Result(name, rate, "GB/s", raw, ratio, ">= 0.9 x raw", ratio >= 0.9))
    title = (
        f"weight sync, gloo on 127.0.0.1, 2 processes, {nbytes / 1e6:.0f} MB fp32 "
        f"({nbytes // 4 / 1e6:.0f}M parameters), median of {args.repeats} rounds (ratio: median of per-round "
        f"raw/bucketed time), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, {datetime.date.today()}"
    )
    report(results, json_path=args.json, title=title)


def argparse_hidden() -> str:
    return "internal: 'receiver' for the spawned second process"


if __name__ == "__main__":
    main()
