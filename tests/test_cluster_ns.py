"""A real multi-node cluster on one machine: `ray up cluster/onprem.yaml` from a "laptop" host over SSH into a
head and two workers, each its own network, mount, PID and UTS namespace (tests/nscluster.py), results on an S3
server in a "storage" host; `ray dashboard`, `ray job submit`, the report read back from S3, `ray down`.

One cluster for the module; root, tini, sshd and rsync needed (`.ci/run` installs them), skipped otherwise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from nscluster import available
from nslab import AWS, BUCKET, Lab

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=f"{available()}")]
SEARCH = ("ablations/task_weights.yaml --address auto --profile smoke --seeds 1 --no-dashboard --wandb off "
          "--max-concurrent 3")


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.start_storage()
        started = time.monotonic()
        lab.up()
        lab.timings["nodes alive after ray up"] = round(lab.wait_nodes(3), 1)
        lab.timings["ray up to 3 nodes"] = round(time.monotonic() - started, 1)
        lab.dashboard()
        yield lab
    finally:
        if not os.environ.get("MTL_TUNE_KEEP_LAB"):  # debugging: keep the hosts (clean up with lab.destroy())
            lab.down()
            lab.destroy()
        print(f"\ncluster timings (s): {json.dumps(lab.timings)}")


def test_each_host_is_its_own_machine(lab):
    names = {h: lab.hosts.run(h, "hostname").stdout.strip() for h in ("head", "w1", "w2")}
    assert names == {"head": "head", "w1": "w1", "w2": "w2"}
    # separate process tables: the head's Ray processes are invisible from a worker
    assert "gcs_server" not in lab.hosts.run("w1", "ps ax").stdout
    assert "gcs_server" in lab.hosts.run("head", "ps ax").stdout
    # separate disks: a file in the head's /tmp and HOME is not on a worker
    lab.hosts.run("head", "touch /tmp/only-on-head ~/only-on-head")
    assert lab.hosts.run("w1", "ls /tmp/only-on-head ~/only-on-head", check=False).returncode != 0


def test_a_local_storage_path_is_refused_on_the_cluster(lab):
    out = lab.submit(f"{SEARCH} --storage /root/results", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "a local path, but this Ray cluster has 3 nodes" in text, text[-3000:]
    assert "s3://" in text and "--storage-shared" in text
    assert lab.hosts.run("head", "ls /root/results/task_weights/*/result.json", check=False).returncode != 0


def test_search_on_the_cluster_to_s3_then_the_report_read_back(lab):
    started = time.monotonic()
    out = lab.submit(f"{SEARCH} --storage s3://{BUCKET}/experiments")
    lab.timings["job: 5 smoke trials on 3 nodes"] = round(time.monotonic() - started, 1)
    assert "succeeded" in out.stdout, out.stdout[-3000:]
    report = lab.laptop(f"python -m analysis.report s3://{BUCKET}/experiments/task_weights --out /tmp/report "
                        "--formats md", env={**AWS, "AWS_ENDPOINT_URL": lab.endpoint})
    table = lab.hosts.run("laptop", "cat /tmp/report/table.md").stdout
    assert table.count("1/1 completed") == 5, table  # every row, its one seed
    assert report.returncode == 0
    # the trials ran on more than one node, each generating the synthetic data in its own HOME on first use
    hosts = lab.laptop(
        "python -c \"import pandas as pd, pyarrow.fs as fs, json; s3 = fs.S3FileSystem(endpoint_override="
        f"'{lab.endpoint}'); sel = fs.FileSelector('{BUCKET}/experiments/task_weights', recursive=True); "
        "names = [i.path for i in s3.get_file_info(sel) if i.base_name == 'result.json']; "
        "print(json.dumps(sorted({json.loads(s3.open_input_stream(n).read().splitlines()[-1])['hostname'] "
        "for n in names})))\"", env={**AWS, "AWS_ENDPOINT_URL": lab.endpoint}).stdout.strip().splitlines()[-1]
    ran_on = set(json.loads(hosts))
    assert len(ran_on) >= 2 and ran_on <= {"head", "w1", "w2"}, ran_on
    for host in ran_on:
        assert lab.hosts.run(host, "ls ~/.cache/mtl-tune/synthetic").stdout.strip(), host


def _timeline(path) -> list[tuple[float, set[str]]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            t, alive = json.loads(line)
        except ValueError:
            continue
        out.append((t, set(alive)))
    return out


def _first(timeline, after: float, ip: str, present: bool) -> float | None:
    return next((round(t - after, 1) for t, alive in timeline if t > after and (ip in alive) == present), None)


def _wait_seen(watch, ip: str, present: bool, after: float, timeout: float = 120) -> float:
    """Until the head's node watcher sees `ip` dead (present=False) or alive again, after time `after`: node
    health, not a fixed sleep. Returns the seconds it took; fails loudly when it never happens."""
    deadline = time.monotonic() + timeout
    while (seen := _first(_timeline(watch), after, ip, present)) is None:
        assert time.monotonic() < deadline, f"{ip} never seen {'alive' if present else 'dead'} after the fault"
        time.sleep(0.5)
    return seen


def test_faults_lose_no_finished_result(lab):
    """Hang a worker and partition the other until Ray declares each dead, cut the storage 20 s, kill a worker -
    during one search. Each node fault must be detected; the trials on a lost node are retried from their last
    checkpoints; every row ends with every seed completed."""
    watch = lab.watch_nodes()
    job = lab.submit_async(f"{SEARCH.replace('--seeds 1', '--seeds 3')} --set epochs=6 --set checkpoint_every=3 "
                           f"--storage s3://{BUCKET}/faults --name faults")
    w1, w2 = (lab.hosts.hosts[h] for h in ("w1", "w2"))
    events: dict[str, dict] = {}

    def wait_running(host: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not lab.running_on(host):
            assert time.monotonic() < deadline and lab.job_status(job) in ("PENDING", "RUNNING"), \
                lab.job_logs(job)[-3000:]
            time.sleep(1)

    wait_running("w1")
    start = time.time()
    lab.hosts.pause("w1")
    detected = _wait_seen(watch, w1.ip, present=False, after=start)
    lab.hosts.pause("w1", resume=True)
    events["hang w1 (SIGSTOP until seen dead)"] = {"at": start, "ip": w1.ip, "healed": time.time(),
                                                    "detected": detected}
    wait_running("w2")
    start = time.time()
    lab.hosts.partition("w2")
    detected = _wait_seen(watch, w2.ip, present=False, after=start)
    lab.hosts.heal("w2")
    events["partition w2 (until seen dead)"] = {"at": start, "ip": w2.ip, "healed": time.time(), "detected": detected}
    start = time.time()
    lab.hosts.partition("storage")
    time.sleep(20)  # the storage is no node: nothing to wait on but the outage itself
    lab.hosts.heal("storage")
    events["storage unreachable (20 s)"] = {"at": start, "ip": None, "healed": time.time()}
    alive = _timeline(watch)[-1][1]
    victim = next((h for h in ("w1", "w2") if lab.hosts.hosts[h].ip in alive and lab.running_on(h)), "w1")
    start = time.time()
    lab.hosts.kill(victim)
    detected = _wait_seen(watch, lab.hosts.hosts[victim].ip, present=False, after=start)
    events[f"kill {victim} (every process)"] = {"at": start, "ip": lab.hosts.hosts[victim].ip, "healed": None,
                                                "detected": detected}
    deadline = time.monotonic() + 900
    while (status := lab.job_status(job)) not in ("SUCCEEDED", "FAILED", "STOPPED"):  # UNKNOWN: ask again
        assert time.monotonic() < deadline, "the search did not finish"
        time.sleep(3)
    logs = lab.job_logs(job)
    assert status == "SUCCEEDED", logs[-4000:]
    retried = _s3_probe(lab, "faults/faults", "print(json.dumps(sorted(i.path.split('/')[-2] for i in infos "
                                               "if i.base_name == 'error.txt')))")
    table = _fault_table(events, _timeline(watch), retried)
    print("\n" + table)
    # every node fault was seen by Ray, and the trials it hit were retried from a checkpoint (error.txt is Tune's
    # record of a failed attempt), never lost
    assert all(e["detected"] is not None for e in events.values() if e["ip"]), table
    assert len(retried) >= 1, table
    report = lab.laptop(f"python -m analysis.report s3://{BUCKET}/faults/faults --out /tmp/faults --formats md",
                        env={**AWS, "AWS_ENDPOINT_URL": lab.endpoint})
    assert report.returncode == 0
    text = lab.hosts.run("laptop", "cat /tmp/faults/table.md").stdout
    assert text.count("3/3 completed") == 5, text  # every row, every seed: nothing lost, retried ones included


def _fault_table(events: dict, timeline, retried: list[str]) -> str:
    rows = ["| fault | detected after (s) | node back after heal (s) |", "|---|---|---|"]
    for name, e in events.items():
        back = _first(timeline, e["healed"], e["ip"], present=True) if e["ip"] and e["healed"] else None
        rows.append(f"| {name} | {e.get('detected') if e['ip'] else 'not a node fault'} | "
                    f"{back if back is not None else '—'} |")
    return "\n".join([*rows, "", f"trials retried from their last checkpoint ({len(retried)}): {', '.join(retried)}; "
                       "results lost: 0"])


def _s3_probe(lab, prefix: str, body: str, tries: int = 5):
    """Run `body` on the laptop with `infos` = every file under s3://BUCKET/prefix and `s3`, and return the JSON
    it prints. A probe never swallows its own failure: a failed or unreadable answer is retried, then raised."""
    code = ("import pyarrow.fs as fs, json; s3 = fs.S3FileSystem(endpoint_override='" + lab.endpoint + "'); "
            f"infos = s3.get_file_info(fs.FileSelector('{BUCKET}/{prefix}', recursive=True, allow_not_found=True)); "
            + body)
    for attempt in range(tries):
        out = lab.laptop(f"python -c \"{code}\"", env={**AWS, "AWS_ENDPOINT_URL": lab.endpoint}, check=False)
        lines = out.stdout.strip().splitlines()
        if out.returncode == 0 and lines:
            try:
                return json.loads(lines[-1])
            except ValueError:
                pass
        if attempt == tries - 1:
            raise AssertionError(f"S3 probe failed {tries} times: rc {out.returncode}\n{out.stdout[-2000:]}\n"
                                 f"{out.stderr[-2000:]}")
        time.sleep(2)
    return None


def test_head_loss_then_a_new_cluster_resumes_the_search(lab):
    """The head dies with the search's driver: start the cluster again (`ray up`) and submit the same search
    with --resume as a new job; finished trials are kept (their results are in S3), the others continue."""
    for name in ("w1", "w2"):  # a worker an earlier test killed comes back first (same address and disk)
        if not Path(f"/proc/{lab.hosts.hosts[name].pid}").exists():
            lab.hosts.restart(name)
    argv = f"{SEARCH} --set epochs=6 --storage s3://{BUCKET}/headloss --name headloss"
    lab.submit_async(argv)
    deadline = time.monotonic() + 600
    while len(before := _finished_in_s3(lab, "headloss")) < 2:  # some trials done, others running
        assert time.monotonic() < deadline, "no trial finished"
        time.sleep(2)
    lost = time.monotonic()
    lab.hosts.kill("head")
    lab.hosts.restart("head")
    lab.up()
    lab.timings["head lost -> cluster up again"] = round(time.monotonic() - lost, 1)
    lab.wait_nodes(3)
    lab.timings["head lost -> 3 nodes alive"] = round(time.monotonic() - lost, 1)
    lab.dashboard()  # the old tunnel ended with the head's sshd
    out = lab.submit(f"{argv} --resume")
    lab.timings["resumed job"] = round(time.monotonic() - lost, 1)
    assert "succeeded" in out.stdout, out.stdout[-3000:]
    lab.laptop(f"python -m analysis.report s3://{BUCKET}/headloss/headloss --out /tmp/headloss --formats md",
               env={**AWS, "AWS_ENDPOINT_URL": lab.endpoint})
    table = lab.hosts.run("laptop", "cat /tmp/headloss/table.md").stdout
    assert table.count("1/1 completed") == 5, table  # every row: nothing lost
    after = _finished_in_s3(lab, "headloss")
    # the trials that had finished before the head died were kept, not trained again: the same epochs, each once
    # (a trial the lost driver's last snapshot had not seen finish may report its final result once more)
    assert {t: after.get(t) for t in before} == before, (before, after)


def _finished_in_s3(lab, name: str) -> dict[str, list[int]]:
    """Trials of the experiment whose last result in S3 says completed -> the epochs they trained, each once (a
    trained-again trial would show its first epochs twice: the list would change). A result.json still being
    uploaded counts as not finished. Retried, then raised, when the probe itself fails."""
    return _s3_probe(lab, f"headloss/{name}", (
        "rows = {i.path.split('/')[-2]: [json.loads(x) for x in s3.open_input_stream(i.path).read().decode()"
        ".splitlines() if x.strip().endswith('}')] for i in infos if i.base_name == 'result.json'}; "
        "epochs = lambda lines: sorted(l.get('epoch') for l in lines if l.get('epoch') is not None); "
        "once = lambda e: sorted(set(e)) + [x for x in e if e.count(x) > 1 and x != max(e)]; "
        "print(json.dumps({t: once(epochs(lines)) for t, lines in rows.items() if lines and "
        "lines[-1].get('status') == 'completed'}))"))
