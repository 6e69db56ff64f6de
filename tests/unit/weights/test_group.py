"""Where a group's members rendezvous: loopback outside Ray and on one node, rank 0's node address on many."""

import subprocess
import sys

import pytest

from spear_ray.weights.group import WeightSyncError, rendezvous_host


def test_node_address_is_loopback_without_ray():
    """Outside Ray (and without importing it) the rendezvous address is 127.0.0.1."""
    code = "import sys; from spear_ray.weights.group import node_address; print(node_address(), 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["127.0.0.1", "False"]


def test_rendezvous_host_is_loopback_on_one_node_and_the_node_address_on_many():
    head = {"NodeID": "a", "Alive": True, "NodeManagerAddress": "10.0.0.1"}
    worker = {"NodeID": "b", "Alive": True, "NodeManagerAddress": "10.0.0.2"}
    gone = {"NodeID": "c", "Alive": False, "NodeManagerAddress": "10.0.0.3"}
    assert rendezvous_host([head], "a") == "127.0.0.1"
    assert rendezvous_host([head, gone], "a") == "127.0.0.1"  # a dead node does not make the cluster multi-node
    assert rendezvous_host([head, worker], "b") == "10.0.0.2"
    assert rendezvous_host([head, worker, gone], "a") == "10.0.0.1"
    with pytest.raises(WeightSyncError, match="node c is not among the cluster's alive nodes"):
        rendezvous_host([head, worker, gone], "c")
