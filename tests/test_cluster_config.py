"""cluster/aws.yaml: validated offline with Ray's own launcher schema and config preparation, and
bootstrapped (IAM, key pair, subnets, security group) against moto's server on 127.0.0.1 - never `ray up`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster" / "aws.yaml"
WORKER_TYPES = {"g4dn.xlarge", "g5.xlarge", "p2.xlarge"}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_validates_with_rays_schema_and_preparation(raw):
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)  # ray/autoscaler/ray-schema.json + the launcher's own checks
    assert prepared["head_node_type"] == "head"
    assert prepared["available_node_types"]["head"]["max_workers"] == 0


def test_region_quota_and_idle_timeout(raw):
    assert raw["provider"]["type"] == "aws" and raw["provider"]["region"] == "us-east-2"
    assert raw["max_workers"] == 2 and raw["idle_timeout_minutes"] > 0
    worker = raw["available_node_types"]["gpu_worker"]
    assert (worker["min_workers"], worker["max_workers"]) == (0, 2) and worker["resources"]["GPU"] == 1


def test_head_on_demand_workers_on_the_spot_market(raw):
    head = raw["available_node_types"]["head"]["node_config"]
    assert "InstanceMarketOptions" not in head and head["InstanceType"].startswith("m5")
    offered = raw["metadata"]["gpu_instances"]
    assert set(offered) == WORKER_TYPES
    for name, node in offered.items():
        assert node["InstanceType"] == name
        assert node["InstanceMarketOptions"]["MarketType"] == "spot"
        assert node["IamInstanceProfile"] == {"Name": "mtl-tune-worker"}
    chosen = raw["available_node_types"]["gpu_worker"]["node_config"]
    assert chosen == offered["g4dn.xlarge"]  # the default pick; one line switches it
    assert "compute capability 3.7" in CLUSTER.read_text()  # why p2 (K80) is only kept for reference


def test_dashboard_stays_on_localhost_and_no_extra_ports(raw):
    start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "security_group" not in raw["provider"]  # Ray's default: SSH + intra-cluster, nothing else
    text = CLUSTER.read_text().lower()
    assert not any(k in text for k in ("aws_access_key_id", "aws_secret_access_key", "wandb_api_key", "api_key:"))


def test_token_authentication_on_every_node_without_the_token_in_the_file(raw):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # a path, never the token itself
    assert "ray job submit --address http://127.0.0.1:8265" in CLUSTER.read_text()


def test_aws_bootstrap_against_moto_opens_ssh_only(raw, aws_env, tmp_path, monkeypatch):
    import boto3
    import ray.autoscaler._private.aws.config as aws_config
    from ray.autoscaler._private.commands import _bootstrap_config

    monkeypatch.setenv("HOME", str(tmp_path))  # the key pair's .pem lands here
    monkeypatch.setattr(aws_config.time, "sleep", lambda s: None)  # IAM propagation waits, pointless on moto
    resolved = _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)
    groups = {g for t in resolved["available_node_types"].values() for g in t["node_config"]["SecurityGroupIds"]}
    assert len(groups) == 1
    ec2 = boto3.client("ec2", region_name="us-east-2")
    (group,) = ec2.describe_security_groups(GroupIds=list(groups))["SecurityGroups"]
    assert group["GroupName"] == "ray-autoscaler-mtl-tune"
    public = [p for p in group["IpPermissions"] if p["IpRanges"] or p.get("Ipv6Ranges")]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in public] == [("tcp", 22, 22)]
    assert [r["CidrIp"] for r in public[0]["IpRanges"]] == ["0.0.0.0/0"]
    internal = [p for p in group["IpPermissions"] if p["UserIdGroupPairs"]]
    assert [pair["GroupId"] for p in internal for pair in p["UserIdGroupPairs"]] == [group["GroupId"]]
    assert resolved["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    assert (tmp_path / ".ssh" / "ray-autoscaler_us-east-2.pem").is_file()


def test_mps_is_an_off_by_default_worker_option_that_starts_the_daemon_when_on(raw, tmp_path):
    import subprocess

    (line,) = [c for c in raw["worker_start_ray_commands"] if "nvidia-cuda-mps-control" in c]
    start = [i for i, c in enumerate(raw["worker_start_ray_commands"]) if "ray start" in c]
    assert raw["worker_start_ray_commands"].index(line) < start[0]  # the daemon before any CUDA process
    assert not any("mps" in c.lower() for c in raw["head_start_ray_commands"])  # the head has no GPU
    stub = tmp_path / "nvidia-cuda-mps-control"  # records how it is called; no GPU setting is touched
    stub.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\n")
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for toggle, calls in (("off", []), ("on", ["", "-d"])):  # `echo quit | ...` (no args), then `-d`
        (tmp_path / "calls").write_text("")
        subprocess.run(["bash", "-c", line.replace("MPS=off", f"MPS={toggle}")], env=env, check=True)
        assert (tmp_path / "calls").read_text().splitlines() == calls


def test_onprem_config_validates_and_shares_the_aws_setup():
    onprem = yaml.safe_load((CLUSTER.parent / "onprem.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(onprem))
    validate_config(prepared)
    assert onprem["provider"]["type"] == "local" and len(onprem["provider"]["worker_ips"]) == 2
    aws = yaml.safe_load(CLUSTER.read_text())
    for key in ("file_mounts", "rsync_exclude", "setup_commands"):
        assert onprem[key] == aws[key], key
    assert [c for c in onprem["worker_start_ray_commands"] if "MPS" in c] == \
        [c for c in aws["worker_start_ray_commands"] if "MPS" in c]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = onprem[key][-1]
        assert "RAY_AUTH_MODE=token" in start  # the token file is mounted on every node
        for flag in ("--num-cpus=", "--num-gpus=", "--memory=", "--object-store-memory="):  # explicit resources
            assert flag in start, (key, flag)
    assert "--dashboard-host=127.0.0.1" in onprem["head_start_ray_commands"][-1]
