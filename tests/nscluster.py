"""Hosts built from Linux namespaces, for multi-node tests on one machine (root only).

Each host is a network namespace with its own address on a private bridge, plus its own mount, PID and UTS
namespaces: its own hostname, HOME (a folder of its own bound over /root), /tmp, a size-limited /dev/shm and
results folder, and tini as PID 1 running an sshd. The bridge lives in a "switch" namespace of its own, so the
machine's own namespace gets no address, route or forwarding: every packet stays between these namespaces.

    hosts = NsHosts.create(tmp_path, ["laptop", "storage", "head", "w1", "w2"])
    hosts.run("head", "hostname")          # a command inside a host (nsenter into its namespaces)
    hosts.ssh("laptop", "head", "uptime")  # over SSH, as the cluster launcher does
    hosts.partition("w1") / hosts.heal("w1"); hosts.kill("w2"); hosts.destroy()

A host ends when its PID 1 ends: every process it started goes with it (that is a node dying).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.7"  # not used by this machine (checked at creation)
SHM_MB = 256


def available() -> str | None:
    """Why these hosts cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare", "nsenter", "tini", "sshd", "ssh-keygen", "rsync"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (apt-get install iproute2 util-linux tini openssh-server rsync)"
    if SUBNET + "." in subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout:
        return f"{SUBNET}.0/24 is in use on this machine"
    return None


def _sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


@dataclass
class Host:
    name: str
    ip: str
    netns: str
    port: str  # its veth end in the switch namespace
    home: Path
    proc: subprocess.Popen | None = None
    pid: int = 0  # PID 1 of the host (tini), as the machine sees it


@dataclass
class NsHosts:
    root: Path
    tag: str
    hosts: dict[str, Host] = field(default_factory=dict)
    key: Path | None = None

    @property
    def switch(self) -> str:
        return f"{self.tag}sw"

    @classmethod
    def create(cls, names: list[str]) -> NsHosts:
        """The hosts' folders go under /var/tmp (a host's own /tmp hides the machine's), removed by destroy()."""
        why = available()
        if why:
            raise RuntimeError(f"namespace hosts: {why}")
        self = cls(Path(tempfile.mkdtemp(prefix="mtl-nshosts-", dir="/var/tmp")), "mt" + uuid.uuid4().hex[:5])
        try:
            self._switch()
            self._keys()
            for i, name in enumerate(names):
                self._host(name, f"{SUBNET}.{10 + i}", i)
            for host in self.hosts.values():
                self._wait_ssh(host)
        except BaseException:
            self.destroy()
            raise
        return self

    def _switch(self) -> None:
        _sh("ip", "netns", "add", self.switch)
        _sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.switch, "link", "set", "br0", "up")

    def _keys(self) -> None:
        keys = self.root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        self.key = keys / "id_ed25519"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mtl-tune-test", "-f", str(self.key))

    def _host(self, name: str, ip: str, index: int) -> None:
        netns, inner, outer = f"{self.tag}{name}", f"{self.tag}{index}i", f"{self.tag}{index}o"
        home = self.root / name / "home"
        for sub in ("home/.ssh", "tmp", "results", "etc"):
            (self.root / name / sub).mkdir(parents=True, exist_ok=True)
        _sh("ip", "netns", "add", netns)
        _sh("ip", "link", "add", inner, "netns", netns, "type", "veth", "peer", outer, "netns", self.switch)
        _sh("ip", "-n", self.switch, "link", "set", outer, "master", "br0", "up")
        _sh("ip", "-n", netns, "link", "set", "lo", "up")
        _sh("ip", "-n", netns, "link", "set", inner, "name", "eth0")
        _sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", netns, "link", "set", "eth0", "up")
        # Ray finds its own address by routing a UDP socket towards a public one: a default route on the bridge
        # (nothing answers there, and nothing is forwarded off it)
        _sh("ip", "-n", netns, "route", "add", "default", "dev", "eth0")
        host = Host(name, ip, netns, outer, home)
        self.hosts[name] = host  # from here on destroy() cleans it up
        self._sshd_files(host)
        self._boot(host)

    def _boot(self, host: Host) -> None:
        """PID 1 of the host (tini) in fresh PID, mount and UTS namespaces inside its network namespace."""
        log = self.root / host.name / "init.log"
        host.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc",
             "--kill-child", "tini", "-s", "-g", "--", "/bin/sh", str(self.root / host.name / "etc" / "init.sh")],
            stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        host.pid = self._init_pid(host.proc.pid, log)

    def restart(self, name: str) -> None:
        """The machine comes back after a crash: same address, same disk (HOME, /tmp), no processes but sshd."""
        host = self.hosts[name]
        self._boot(host)
        self._wait_ssh(host)

    def _sshd_files(self, host: Host) -> None:
        etc = self.root / host.name / "etc"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "ssh_host_ed25519_key"))
        (host.home / ".ssh" / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (etc / "sshd_config").write_text(
            f"ListenAddress {host.ip}\nPort 22\nHostKey {etc}/ssh_host_ed25519_key\nPidFile /tmp/sshd.pid\n"
            "UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nPasswordAuthentication no\n"
            "AuthorizedKeysFile /root/.ssh/authorized_keys\nAcceptEnv RAY_*\nX11Forwarding no\n"
            "AllowTcpForwarding yes\nPermitUserEnvironment no\nSubsystem sftp internal-sftp\n")
        # the host's private mounts, then sshd as tini's child: a private /tmp, HOME, /dev/shm and results
        hold, back = self._keep_under_tmp(host)
        (etc / "init.sh").write_text(
            "set -e\nmount --make-rprivate /\n" + hold +
            f"mount --bind {self.root / host.name / 'tmp'} /tmp\nchmod 1777 /tmp\n" + back +
            f"mount -t tmpfs -o size={SHM_MB}m tmpfs /dev/shm\n"
            + self._keep_interpreter(host) +
            f"mount --rbind {host.home} /root\nchmod 700 /root\n"
            "mkdir -p /run/sshd\n"
            f"hostname {host.name}\n"
            f"exec /usr/sbin/sshd -D -e -f {etc / 'sshd_config'}\n")

    def _keep_under_tmp(self, host: Host) -> tuple[str, str]:
        """This checkout and its virtual environment may live under /tmp (a CI clone): the host's private /tmp
        would hide them, so they are held aside and bound back into it (as a lab image would have them)."""
        wanted = sorted({p for p in (Path(sys.prefix).resolve(), Path(__file__).resolve().parents[1])
                         if p.is_relative_to("/tmp")})
        keep = [p for p in wanted if not any(p != q and p.is_relative_to(q) for q in wanted)]
        hold = back = ""
        for i, path in enumerate(keep):
            aside = self.root / host.name / f"keep{i}"
            aside.mkdir(exist_ok=True)
            hold += f"mount --bind {path} {aside}\n"
            back += f"mkdir -p {path}\nmount --bind {aside} {path}\n"
        return hold, back

    @staticmethod
    def _keep_interpreter(host: Host) -> str:
        """This machine's Python may live under /root (pyenv): the host's own HOME hides /root, so that folder is
        bound read-only into it, as an image's preinstalled Python would be."""
        base = Path(sys.base_prefix).resolve()
        if not base.is_relative_to("/root"):
            return ""
        top = Path("/root") / base.relative_to("/root").parts[0]
        inside = host.home / top.relative_to("/root")
        return f"mkdir -p {inside}\nmount --bind {top} {inside}\nmount -o remount,bind,ro {inside}\n"

    @staticmethod
    def _init_pid(unshare_pid: int, log: Path, timeout: float = 10) -> int:
        """tini's PID as the machine sees it: the child `unshare --fork` started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.05)
        raise RuntimeError(f"a namespace host did not start: {log.read_text()[-2000:]}")

    def _wait_ssh(self, host: Host, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ssh(next(iter(self.hosts)), host.name, "true", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.3)
        log = (self.root / host.name / "init.log").read_text()
        raise RuntimeError(f"sshd on {host.name} did not answer: {log[-2000:]}")

    # --- using the hosts ---
    def nsenter(self, name: str) -> list[str]:
        """The prefix that runs a command inside a host: its network, mount, PID and UTS namespaces."""
        return ["nsenter", "-t", str(self.hosts[name].pid), "-n", "-m", "-p", "-u", "--"]

    def run(self, name: str, command: str, check: bool = True, timeout: float | None = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full = {**os.environ, "HOME": "/root", **(env or {})}
        return subprocess.run([*self.nsenter(name), "/bin/bash", "-c", command], check=check, capture_output=True,
                              text=True, timeout=timeout, env=full)

    def popen(self, name: str, command: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        full = {**os.environ, "HOME": "/root", **(env or {})}
        return subprocess.Popen([*self.nsenter(name), "/bin/bash", "-c", command], stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, env=full, start_new_session=True)

    def ssh_options(self) -> list[str]:
        return ["-i", "/root/.ssh/id_ed25519", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes"]

    def ssh(self, src: str, dst: str, command: str, check: bool = False, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        self.give_key(src)
        return self.run(src, " ".join(["ssh", *self.ssh_options(), f"root@{self.hosts[dst].ip}", repr(command)]),
                        check=check, timeout=timeout)

    def give_key(self, name: str) -> Path:
        """The test's private key in a host's ~/.ssh (the laptop's, and the head's for the autoscaler)."""
        dest = self.hosts[name].home / ".ssh" / "id_ed25519"
        if not dest.exists():
            shutil.copy(self.key, dest)
            dest.chmod(0o600)
        return dest

    # --- faults ---
    def partition(self, name: str) -> None:
        """Take the host's bridge port down: its packets are silently dropped both ways."""
        _sh("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def heal(self, name: str) -> None:
        _sh("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def pause(self, name: str, resume: bool = False) -> None:
        """SIGSTOP (or SIGCONT) every process of the host but its PID 1."""
        for pid in self.pids(name):
            if pid != self.hosts[name].pid:
                try:
                    os.kill(pid, signal.SIGCONT if resume else signal.SIGSTOP)
                except ProcessLookupError:
                    pass

    def pids(self, name: str) -> list[int]:
        """Machine PIDs of the processes in the host's PID namespace."""
        target = os.readlink(f"/proc/{self.hosts[name].pid}/ns/pid")
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "pid") == target:
                        out.append(int(entry.name))
                except OSError:
                    continue
        return out

    def kill(self, name: str) -> None:
        """The host dies: its PID 1 is killed, and the kernel ends every process in its PID namespace."""
        host = self.hosts[name]
        try:
            os.kill(host.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if host.proc is not None:
            try:
                host.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                host.proc.kill()

    def destroy(self) -> None:
        """Always safe to call: end every host, delete every namespace and veth of this set."""
        for name in list(self.hosts):
            if self.hosts[name].pid:
                self.kill(name)
        for host in self.hosts.values():
            _sh("ip", "netns", "delete", host.netns, check=False)
        _sh("ip", "netns", "delete", self.switch, check=False)
        self.hosts.clear()
        shutil.rmtree(self.root, ignore_errors=True)
