"""The user's cluster flow on namespace hosts (tests/nscluster.py): a "laptop" runs `ray up cluster/onprem.yaml`
against a head and two workers over SSH, `ray dashboard` for the tunnel and `ray job submit`; a "storage" host
serves S3 (moto). The config is cluster/onprem.yaml with only what a lab would edit changed: the addresses,
the SSH user and key, the resources (these hosts share 2 cores), and the setup commands - the hosts have no
internet, so `~/venv` is this machine's virtual environment (as a lab's image would have it preinstalled).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from nscluster import NsHosts

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the virtual environment running the tests: the hosts' ~/venv
NODE_RESOURCES = "--num-cpus=1 --num-gpus=0 --memory=1500000000 --object-store-memory=100000000"
S3_PORT = 5000
BUCKET = "mtl-lab"
AWS = {"AWS_ACCESS_KEY_ID": "AKIAMTLTUNELABKEY01", "AWS_SECRET_ACCESS_KEY": "mtl-tune-lab-secret-DO-NOT-LEAK",
       "AWS_DEFAULT_REGION": "us-east-2", "AWS_REGION": "us-east-2"}
# faster failure detection than Ray's defaults (about 20 s for a refused connection, 55 s for dropped packets)
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
          "RAY_health_check_failure_threshold": "5", "RAY_USAGE_STATS_ENABLED": "0"}
# Ray's autoscaler v2 with the on-prem provider counts the head as one of `min_workers` and brings workers up one
# by one (Ray 2.60); the v1 autoscaler starts every listed worker at once (docs/clusters.md)
LAUNCHER = {"RAY_UP_enable_autoscaler_v2": "0"}


def render_config(hosts: NsHosts, out: Path) -> Path:
    """cluster/onprem.yaml for these hosts."""
    cfg = yaml.safe_load((REPO / "cluster" / "onprem.yaml").read_text())
    cfg["cluster_name"] = f"mtl-lab-{hosts.tag}"
    cfg["provider"].update(head_ip=hosts.hosts["head"].ip, worker_ips=[hosts.hosts[w].ip for w in ("w1", "w2")])
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": "~/.ssh/id_ed25519"}
    # offline hosts: the venv is this machine's (a lab image would have it); the PATH line is the config's own
    cfg["setup_commands"] = [f"ln -sfn {VENV} ~/venv", *[c for c in cfg["setup_commands"] if ".bashrc" in c]]
    env = " ".join(f"{k}={v}" for k, v in HEALTH.items())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cfg[key] = [re.sub(r"--num-cpus=\S+ --num-gpus=\S+ --memory=\S+ --object-store-memory=\S+", NODE_RESOURCES,
                           c).replace("RAY_AUTH_MODE=token", f"RAY_AUTH_MODE=token {env}") for c in cfg[key]]
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


class Lab:
    """The hosts, the S3 server, and the laptop's commands."""

    def __init__(self) -> None:
        self.hosts = NsHosts.create(["laptop", "storage", "head", "w1", "w2"])
        self.root = self.hosts.root
        self.config = render_config(self.hosts, self.root / "onprem.yaml")
        self.endpoint = f"http://{self.hosts.hosts['storage'].ip}:{S3_PORT}"
        self.timings: dict[str, float] = {}
        self.procs: list[subprocess.Popen] = []

    def laptop(self, command: str, timeout: float = 600, check: bool = True, env: dict | None = None
               ) -> subprocess.CompletedProcess:
        """A command on the laptop, in the repository, with its venv on PATH."""
        full = {"PATH": f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin", **HEALTH, **(env or {})}
        started = time.monotonic()
        out = self.hosts.run("laptop", f"cd {REPO} && {command}", check=False, timeout=timeout, env=full)
        self.timings[command.split(" --")[0][:60]] = round(time.monotonic() - started, 1)
        if check and out.returncode != 0:
            raise AssertionError(f"laptop: {command}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
        return out

    def start_storage(self) -> None:
        ip = self.hosts.hosts["storage"].ip
        self.procs.append(self.hosts.popen("storage", f"{VENV}/bin/python -m moto.server -H {ip} -p {S3_PORT}",
                                           self.root / "moto.log"))
        self.laptop(f"python -c \"import boto3, time\n"
                    f"for _ in range(100):\n"
                    f"    try:\n"
                    f"        boto3.client('s3', endpoint_url='{self.endpoint}').create_bucket(Bucket='{BUCKET}', "
                    f"CreateBucketConfiguration={{'LocationConstraint': 'us-east-2'}}); break\n"
                    f"    except Exception: time.sleep(0.3)\n\"", env=AWS, timeout=120)

    def up(self) -> None:
        self.hosts.give_key("laptop")
        self.laptop("test -f ~/.ray/auth_token || ray get-auth-token --generate >/dev/null")
        self.laptop(f"ray up -y --no-config-cache {self.config}", timeout=900, env=LAUNCHER)

    def head(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": f"{VENV}/bin:/usr/bin:/bin", "RAY_AUTH_MODE": "token", **HEALTH}
        return self.hosts.run("head", command, check=check, timeout=timeout, env=env)

    def alive_nodes(self) -> list[str]:
        """Addresses of the nodes the head's GCS sees alive."""
        code = ("import ray, json; ray.init(address='auto', logging_level='ERROR'); "
                "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))")
        out = self.head(f"python -c \"{code}\"", check=False)
        for line in reversed(out.stdout.splitlines()):  # Ray may print notices after it
            if line.startswith("["):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        return []

    def wait_nodes(self, count: int, timeout: float = 300) -> float:
        started = time.monotonic()
        while len(self.alive_nodes()) != count:
            assert time.monotonic() - started < timeout, f"the cluster did not reach {count} nodes"
            time.sleep(2)
        return time.monotonic() - started

    def dashboard(self) -> None:
        """`ray dashboard` (the SSH tunnel to the head's 127.0.0.1:8265), until the job API answers through it."""
        self.procs.append(self.hosts.popen("laptop", f"cd {REPO} && {VENV}/bin/ray dashboard {self.config}",
                                           self.root / "dashboard.log", env={"PATH": f"{VENV}/bin:/usr/bin:/bin"}))
        deadline = time.monotonic() + 120
        probe = ("python -c \"import urllib.request as u, urllib.error as e\ntry: "
                 "u.urlopen('http://127.0.0.1:8265/api/version', timeout=2)\nexcept e.HTTPError: pass\"")
        while self.laptop(probe, check=False, timeout=30).returncode != 0:  # any HTTP answer: 401 without the token
            assert time.monotonic() < deadline, (self.root / "dashboard.log").read_text()[-2000:]
            time.sleep(1)

    def submit(self, argv: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        """`ray job submit` of `python run_search.py ARGV` through the tunnel; waits for the job."""
        runtime = json.dumps({"env_vars": {**AWS, "AWS_ENDPOINT_URL": self.endpoint, **HEALTH}})
        return self.laptop(f"ray job submit --address http://127.0.0.1:8265 --working-dir . "
                           f"--runtime-env-json '{runtime}' -- python run_search.py {argv}", timeout=timeout,
                           check=check, env={"RAY_AUTH_MODE": "token"})

    def submit_async(self, argv: str) -> str:
        """`ray job submit --no-wait`; returns the job's id."""
        runtime = json.dumps({"env_vars": {**AWS, "AWS_ENDPOINT_URL": self.endpoint, **HEALTH}})
        out = self.laptop(f"ray job submit --no-wait --address http://127.0.0.1:8265 --working-dir . "
                          f"--runtime-env-json '{runtime}' -- python run_search.py {argv}",
                          env={"RAY_AUTH_MODE": "token"})
        return re.search(r"raysubmit_\w+", out.stdout + out.stderr).group(0)

    def job_status(self, job: str) -> str:
        out = self.laptop(f"ray job status --address http://127.0.0.1:8265 {job}", check=False,
                          env={"RAY_AUTH_MODE": "token"}, timeout=60)
        text = out.stdout + out.stderr
        ended = re.search(r"Job '\w+' (succeeded|failed|stopped)", text)
        if ended:
            return ended.group(1).upper()
        found = re.search(r"status for job '\w+': .*?(PENDING|RUNNING|SUCCEEDED|FAILED|STOPPED)", text, re.I | re.S)
        return found.group(1).upper() if found else "UNKNOWN"

    def job_logs(self, job: str) -> str:
        return self.laptop(f"ray job logs --address http://127.0.0.1:8265 {job}", check=False,
                           env={"RAY_AUTH_MODE": "token"}, timeout=60).stdout

    def watch_nodes(self) -> Path:
        """A process on the head writing the alive nodes' addresses every 0.5 s (with times) to a file."""
        code = ("import ray, json, time\nray.init(address='auto', logging_level='ERROR')\nwhile True:\n"
                "    alive = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])\n"
                "    print(json.dumps([time.time(), alive]), flush=True)\n    time.sleep(0.5)\n")
        (self.root / "head" / "tmp" / "watch_nodes.py").write_text(code)
        env = {"PATH": f"{VENV}/bin:/usr/bin:/bin", "RAY_AUTH_MODE": "token", **HEALTH}
        self.procs.append(self.hosts.popen("head", "python /tmp/watch_nodes.py > /tmp/nodes.jsonl 2>/tmp/watch.err",
                                           self.root / "watch.log", env=env))
        return self.root / "head" / "tmp" / "nodes.jsonl"

    def running_on(self, host: str) -> bool:
        """Whether a trial runs on the host now (Tune's trial actors are named after the trainable)."""
        return "ImplicitFunc" in self.hosts.run(host, "ps ax -o args", check=False).stdout

    def down(self) -> None:
        self.laptop(f"ray down -y {self.config}", timeout=300, check=False)

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        self.hosts.destroy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["AWS", "BUCKET", "Lab", "os"]
