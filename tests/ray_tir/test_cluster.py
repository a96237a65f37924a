"""A job on a two-node Ray cluster started on this machine holds one rate for the whole job.

Two nodes (a head and a worker: two raylets, each with one CPU) on 127.0.0.1. `ray start`
refuses a worker node bound to loopback (it swaps 127.0.0.1 for the machine's network
address), so the cluster is started with Ray's own `ray.cluster_utils.Cluster`, which starts
the same processes. The job's two actors ask for a whole CPU each, so one runs on each node.
The driver runs in a subprocess (this process already has the session's local Ray).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_KEY
from tests.support.emulator import Emulator
from tests.support.timing import assert_paced_spread

DRIVER = """
import json, sys
from ray.cluster_utils import Cluster
import ray, ray.data
import ray_tir

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
try:
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    ds = ray.data.from_items(
        [{"id": i, "prompt": f"q {i}"} for i in range(60)], override_num_blocks=6
    )
    out = ray_tir.chat(ds, api_key=sys.argv[2], base_url=sys.argv[1], max_tokens=2,
                       concurrency=2, max_in_flight=8, num_cpus=1, requests_per_minute=1200)
    rows = out.take_all()
    print(json.dumps({"nodes": len(nodes), "ids": sorted(r["id"] for r in rows),
                      "errors": [r["error"] for r in rows if r["error"]]}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.timing
@pytest.mark.timeout(300)
def test_two_nodes_hold_one_rate(emulator: Emulator) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray address on loopback
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, emulator.base_url, TEST_KEY],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2
    assert report["ids"] == list(range(60)) and report["errors"] == []
    starts = emulator.starts(60)
    assert len(starts) == 60
    # One pace for both nodes: 20 at once, then 40 more 50 ms apart (2 s). One pacer per node
    # instead would let 40 go at once and the rest at twice the rate (0.5 s).
    assert_paced_spread(starts, burst=20, per_second=20.0)
