"""`siftmix run` submitted as a Ray job to a real 2-node cluster on this machine gives output
byte-identical to the embedded single-process run of the same config.

The cluster is used only through subprocesses (`ray start`, `ray job submit`, `ray list`): the
test process never joins it, so the session's embedded Ray (``ray_local``) is untouched.
"""

import json
import re

import pytest
from conftest import assert_same_run, write_demo_config
from ray_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(marker=tmp_path)
    try:
        yield c.start()
    finally:
        c.stop()
        assert c.processes() == [], "cluster processes left behind"


def test_job_on_two_node_cluster_equals_embedded_run(cluster, demo_corpus, demo_reference, tmp_path):
    nodes = [n for n in cluster.nodes() if n["state"] == "ALIVE"]
    assert len(nodes) == 2 and sum(n["resources_total"].get("worker_node", 0) for n in nodes) == 1
    # the config (absolute paths) lies outside the uploaded working dir: the job's driver runs in
    # Ray's copy of the working dir, where relative paths would end up
    config = write_demo_config(tmp_path / "config" / "demo.yaml", demo_corpus, tmp_path / "run")
    workdir = tmp_path / "job"
    workdir.mkdir()
    r = cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(workdir),
                    "--", "siftmix", "run", str(config), timeout=300)
    assert r.returncode == 0 and re.search(r"Job '\S+' succeeded", r.stdout), (r.stdout + r.stderr)[-5000:]
    assert "ray: cluster at" in r.stdout and "2 CPUs" in r.stdout  # the driver joined the cluster, not a local Ray
    assert r.stdout.count("Traceback") == 0
    assert str(tmp_path / "run") in r.stdout  # printed by the driver at the end

    # siftmix tasks and actors ran on both nodes (1 CPU each: two at a time means both)
    ours = [t for t in cluster.tasks() if t["name"] in ("_call", "_ShardActor.process") and t["state"] == "FINISHED"]
    by_node = {n["node_id"]: sum(t["node_id"] == n["node_id"] for t in ours) for n in nodes}
    assert len(ours) > 50 and all(by_node.values()), by_node

    assert_same_run(tmp_path / "run", demo_reference)
    m = json.loads((tmp_path / "run" / "40_mix" / "_manifest.json").read_text())
    assert len(m["shards"]) > 1 and m["partitions"] > 1


def test_job_on_two_node_cluster_with_everything_on_s3(s3_server, s3_corpus, demo_corpus, demo_reference, tmp_path,
                                                       monkeypatch):
    """The same job with the corpus, the benchmarks and the run dir on the S3 server: the two
    nodes share nothing but the bucket (the config travels in the job's working dir), and every
    committed file equals the embedded local run's."""
    from test_object_storage import _assert_same_as_reference, _s3_demo_config

    for k, v in s3_server.env.items():  # each node's own environment: the standard AWS variables
        monkeypatch.setenv(k, v)
    workdir = tmp_path / "job"
    workdir.mkdir()
    run = s3_server.bucket("cluster-run") + "/run"
    _s3_demo_config(workdir / "demo.yaml", s3_corpus, demo_corpus, run)
    c = LocalCluster(marker=tmp_path)
    try:
        c.start()
        r = c.ray("job", "submit", "--address", c.dashboard, "--working-dir", str(workdir),
                  "--", "siftmix", "run", "demo.yaml", timeout=300)
        assert r.returncode == 0 and re.search(r"Job '\S+' succeeded", r.stdout), (r.stdout + r.stderr)[-5000:]
        assert "ray: cluster at" in r.stdout and f"report: {run}/report.html" in r.stdout
        ours = [t for t in c.tasks() if t["name"] in ("_call", "_ShardActor.process") and t["state"] == "FINISHED"]
        assert len({t["node_id"] for t in ours}) == 2
    finally:
        c.stop()
        assert c.processes() == [], "cluster processes left behind"
    assert s3_server.SECRET not in r.stdout + r.stderr
    _assert_same_as_reference(s3_server, run, demo_reference)
