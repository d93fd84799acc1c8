"""`countnet search --address` on a real multi-node Ray cluster: trials spread over nodes,
fractional GPUs, the fail-fast resource check, and token authentication."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.cluster.conftest import (
    COUNTNET,
    LocalCluster,
    Watch,
    epochs,
    read_results,
    report,
    search_args,
    write_space,
)


def test_trials_run_on_two_nodes(cluster: LocalCluster, searches, tmp_path) -> None:
    ids = cluster.node_ids()  # head (no CPU), w1 and w2 (1 CPU each)
    # Trials of a few seconds: much shorter ones may all be done by the first trial actor
    # (reuse_actors) before the second node's actor has even imported torch.
    space = write_space(tmp_path / "space.yaml", fixed={"train_size": 2048}, num_samples=4)
    storage = tmp_path / "shared"
    search = searches(cluster, search_args(space, storage, "spread"), storage / "spread",
                      tmp_path / "search.log")
    assert search.wait() == 0, search.output()[-4000:]
    results = read_results(search.exp_dir)
    assert len(results) == 4
    for rows in results.values():
        assert epochs(rows) == [1, 2]
        assert all(r["hostname"] and r["node_id"] == rows[0]["node_id"] for r in rows)
    used = {rows[0]["node_id"] for rows in results.values()}
    assert used <= set(ids.values())  # real nodes of this cluster
    assert len(used) >= 2, used
    by_node = {name: sum(rows[0]["node_id"] == nid for rows in results.values())
               for name, nid in ids.items()}
    report("multi-node", trials_per_node=by_node)


def test_cluster_refuses_a_client_without_its_token(cluster: LocalCluster) -> None:
    """Token authentication is on: a driver with another token is turned away."""
    code = f"import ray; ray.init(address={cluster.address!r}); print('CONNECTED')"
    # The wrong token, and (a Ray knob) 2 connection attempts instead of ~20 one second apart.
    env = {**cluster.env, "RAY_AUTH_TOKEN": uuid.uuid4().hex,
           "RAY_gcs_server_port_wait_time_s": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "CONNECTED" not in out.stdout
    assert "Authentication token is missing or incorrect" in out.stderr


@pytest.mark.slow
def test_fractional_gpu_trials_share_one_node(cluster: LocalCluster, searches, tmp_path) -> None:
    """num_gpus=1 on one node (a fake GPU: Ray's accounting, torch stays on the CPU); trials of
    {cpu: 0.5, gpu: 0.5} all run on it, two at the same time."""
    cluster.add_node("gpu", cpus=1, gpus=1)
    gpu_node = cluster.node_ids()["gpu"]
    # Trials of a few seconds, as in test_trials_run_on_two_nodes: with shorter ones the first
    # trial actor may run them all (reuse_actors) before the second one is up.
    space = write_space(tmp_path / "space.yaml", fixed={"train_size": 1536}, num_samples=4,
                        resources_per_trial={"cpu": 0.5, "gpu": 0.5})
    storage = tmp_path / "shared"
    search = searches(cluster, search_args(space, storage, "gpu"), storage / "gpu",
                      tmp_path / "search.log")
    watch = Watch(search.exp_dir, search)
    assert watch.to_end() == 0, search.output()[-4000:]
    results = watch.results
    assert len(results) == 4
    for rows in results.values():
        assert epochs(rows) == [1, 2]
        assert {r["node_id"] for r in rows} == {gpu_node}  # the only node with a GPU
    # When each trial ran: from its start (its first report minus that first iteration's
    # time) to its last report.
    ran = {t: (watch.reported_at(t, rows[0]) - float(rows[0]["time_this_iter_s"]),
               watch.reported_at(t, rows[-1]), rows[0]["pid"]) for t, rows in results.items()}
    overlaps = [min(a[1], b[1]) - max(a[0], b[0])
                for i, a in enumerate(ran.values()) for b in list(ran.values())[i + 1:]
                if a[2] != b[2]]  # two trial processes
    assert overlaps and max(overlaps) > 0, ran  # two trials at the same time, on one GPU
    report("fractional-gpu", longest_overlap_s=max(overlaps))


def test_gpu_space_on_a_cluster_without_gpu_fails_fast(cluster: LocalCluster, tmp_path) -> None:
    space = write_space(tmp_path / "space.yaml", resources_per_trial={"cpu": 1, "gpu": 0.5})
    out = subprocess.run(
        [COUNTNET, "search", *search_args(space, tmp_path / "shared", "nogpu"),
         "--address", cluster.address],
        env=cluster.env, capture_output=True, text=True, timeout=120)  # hang guard only
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("countnet search:")]
    assert len(errors) == 1 and "GPU" in errors[0], out.stderr[-2000:]
    assert not list((tmp_path / "shared").glob("nogpu/trial_*"))  # no trial was started
