"""Weight sync data plane: learner rank 0 -> every generator worker over one dedicated process group (DESIGN
"Weight sync"). No Ray here; actors/weight_sync.py is the control plane.

Parts: `buckets` (deterministic fixed-size flat bucket plan, pack, unpack, flat layout), `group` (the standalone
gloo/NCCL group on rank 0's TCPStore, loopback on one node, timeouts, named errors), `sync` (bucket-by-bucket
broadcast, double buffered), `flat_params` (parameters living in the bucket layout: zero-copy sending), `endpoints`
(learner sender, in-process generator receiver), `refit` (learner vs generator log-probs on a fixed probe).
"""

from spear_ray.weights.buckets import BucketPlan, TensorSpec, plan_buckets, specs_of
from spear_ray.weights.group import GroupAddress, WeightSyncError, WeightSyncGroup, join_group, open_store
from spear_ray.weights.refit import RefitError, probe_tokens, refit_report
from spear_ray.weights.sync import SyncStats, receive_flat, receive_weights, send_flat, send_weights

__all__ = [
    "BucketPlan",
    "GroupAddress",
    "RefitError",
    "SyncStats",
    "TensorSpec",
    "WeightSyncError",
    "WeightSyncGroup",
    "join_group",
    "open_store",
    "plan_buckets",
    "probe_tokens",
    "receive_flat",
    "receive_weights",
    "refit_report",
    "send_flat",
    "send_weights",
    "specs_of",
]
