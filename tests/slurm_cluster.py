"""A throwaway one-node SLURM cluster on 127.0.0.1, for testing the SLURM profile.

Everything lives in one directory: slurm.conf, state, spool, logs, pid files and a private
munge socket, so a munged already running on the machine is left alone. One system path is
used: /etc/slurm/slurm.conf is a symlink to the directory's slurm.conf while the cluster
runs, because snakemake-executor-plugin-slurm-jobstep drops SLURM_CONF from the environment
of the `srun` it starts inside each job, and srun then only finds the default path. A real
/etc/slurm/slurm.conf is never replaced: start() refuses instead.

The daemons listen on free ports and run as root, as does the test, so jobs run as their
submitter without any account setup. Without an accounting database `sacct` does not work:
clients use `squeue`, and MinJobAge=900 keeps finished jobs visible to squeue and `scontrol
show job` for 15 minutes (the plugin's squeue mode needs MinJobAge >= 3 x
--slurm-init-seconds-before-status-checks; tests inspect finished jobs).

Needs Debian's slurmctld, slurmd, slurm-client and munge packages and root. By hand:

    python tests/slurm_cluster.py start DIR   # then: export SLURM_CONF=DIR/slurm.conf
    python tests/slurm_cluster.py stop DIR
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PARTITION = "hdmltest"
INSTALL_HINT = (
    "apt-get update && apt-get install -y --no-install-recommends "
    "slurmctld slurmd slurm-client munge"
)
DAEMONS = ("munged", "slurmctld", "slurmd")  # start order; stopped in reverse
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = ".hdml-test-cluster"  # marks a directory this module wrote a cluster into
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class ClusterError(RuntimeError):
    """The cluster cannot be started (missing packages, not root, a daemon failed)."""


def missing_requirements() -> list[str]:
    """Why this machine cannot run the cluster; empty when it can."""
    problems = []
    missing = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b, path=SEARCH_PATH) is None]
    if missing:
        problems.append(f"SLURM/munge binaries not found: {', '.join(missing)} "
                        f"(install with: {INSTALL_HINT})")
    elif not MUNGE_KEY.is_file():
        problems.append(f"{MUNGE_KEY} is missing (the munge package creates it on install)")
    if os.geteuid() != 0:
        problems.append("the test cluster must be started as root (slurmd runs jobs as their submitter)")
    return problems


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_memory_mb() -> int:
    """MemTotal in MiB, as slurmd counts it."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("/proc/meminfo has no MemTotal line")


def pid_alive(pid: int, name: str) -> bool:
    """True while `pid` runs the program `name` (guards against a recycled pid)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and comm == name[:15]  # the kernel truncates comm to 15 characters


class SlurmCluster:
    """munged + slurmctld + slurmd for one node (this host) and one partition."""

    def __init__(self, root: str | Path, partition: str = PARTITION) -> None:
        self.root = Path(root).resolve()
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.socket"

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for SLURM clients (sbatch, squeue, snakemake's plugin) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}

    def pids(self) -> dict[str, int]:
        """Daemon name -> pid for every daemon that has a pid file in the directory."""
        out = {}
        for daemon in DAEMONS:
            try:
                out[daemon] = int(self.pid_file(daemon).read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                continue
        return out

    def running(self) -> list[str]:
        """Daemons of this cluster still alive, by their pid files."""
        return [d for d, pid in self.pids().items() if pid_alive(pid, d)]

    def write_config(self) -> None:
        cpus = os.cpu_count() or 1
        # Below what slurmd detects, else the node is drained for "Low RealMemory".
        memory = max(256, int(available_memory_mb() * 0.9))
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch()
        self.conf.write_text(
            "\n".join([
                "ClusterName=hdmltest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.munge_socket}",
                f"StateSaveLocation={self.root / 'state'}",
                f"SlurmdSpoolDir={self.root / 'spool'}",
                f"SlurmctldPidFile={self.pid_file('slurmctld')}",
                f"SlurmdPidFile={self.pid_file('slurmd')}",
                f"SlurmctldLogFile={self.log_file('slurmctld')}",
                f"SlurmdLogFile={self.log_file('slurmd')}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "ReturnToService=2",
                "MinJobAge=900",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=30",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
                f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ])
        )

    def start(self, timeout: float = 30.0) -> None:
        """Write the config, start the three daemons, wait until the node is idle.

        On any failure the daemons started so far are stopped again.
        """
        problems = missing_requirements()
        if problems:
            raise ClusterError("cannot start the test SLURM cluster: " + "; ".join(problems))
        if len(str(self.munge_socket)) > MAX_SOCKET_PATH:
            raise ClusterError(f"{self.munge_socket}: path too long for a unix socket; use a shorter DIR")
        if running := self.running():
            raise ClusterError(f"{self.root}: a cluster is already running there ({', '.join(running)})")
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._link_system_conf()
        conf = str(self.conf)
        commands = {
            # --force: munged refuses to run as root otherwise; the key is read as root.
            "munged": ["munged", "--force", f"--socket={self.munge_socket}",
                       f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log_file('munged')}",
                       f"--seed-file={self.root / 'munged.seed'}"],
            "slurmctld": ["slurmctld", "-f", conf],
            "slurmd": ["slurmd", "-f", conf, "-N", self.node],
        }
        try:
            for daemon in DAEMONS:
                self._start_daemon(daemon, commands[daemon], timeout)
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def _link_system_conf(self) -> None:
        """Point /etc/slurm/slurm.conf at our config.

        Only a dangling link or one left by a stopped test cluster is replaced.
        """
        target = SYSTEM_CONF.resolve()
        if target == self.conf:
            return
        if SYSTEM_CONF.is_symlink() and not target.exists():
            SYSTEM_CONF.unlink()  # dangling: configures nothing
        elif SYSTEM_CONF.is_symlink() and (target.parent / MARKER).exists():
            other = SlurmCluster(target.parent)
            if other.running():
                raise ClusterError(f"another test cluster still runs in {other.root}; stop it first: "
                                   f"python tests/slurm_cluster.py stop {other.root}")
            SYSTEM_CONF.unlink()  # left by a test cluster that is gone
        elif SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            raise ClusterError(f"{SYSTEM_CONF} exists and is not a test cluster's; "
                               "refusing to replace this machine's SLURM configuration")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)

    def _unlink_system_conf(self) -> None:
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == self.conf:
            SYSTEM_CONF.unlink()

    def _start_daemon(self, daemon: str, command: list[str], timeout: float) -> None:
        """Run a self-daemonizing program and wait for its pid file."""
        self.pid_file(daemon).unlink(missing_ok=True)
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ClusterError(f"{daemon} failed to start (exit {done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()}\n{self.log_tail(daemon)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids().get(daemon)
            if pid is not None and pid_alive(pid, daemon):
                return
            time.sleep(0.1)
        raise ClusterError(f"{daemon} did not come up within {timeout:.0f} s\n{self.log_tail(daemon)}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%T|%E"], env=self.env,
                                  capture_output=True, text=True)
            state = (done.stdout + done.stderr).strip()
            if state.split("|")[0] == "idle":
                return
            time.sleep(0.25)
        raise ClusterError(f"node {self.node} not idle after {timeout:.0f} s (sinfo: {state!r})\n"
                           f"{self.log_tail('slurmctld')}\n{self.log_tail('slurmd')}")

    def log_tail(self, daemon: str, lines: int = 15) -> str:
        path = self.log_file(daemon)
        if not path.is_file():
            return f"({path} not written)"
        return f"--- {path} (last {lines} lines) ---\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel all jobs, stop the daemons by the pids in their pid files, remove the pid
        files and the /etc link. Raises if a job or a daemon survives.
        """
        leftovers = []
        if "slurmctld" in self.running() and "slurmd" in self.running():
            # slurmstepd and the job's processes outlive slurmd: end the jobs first.
            subprocess.run(["scancel", "-p", self.partition], env=self.env, capture_output=True,
                           timeout=timeout)
            deadline = time.monotonic() + timeout
            while (jobs := self.active_jobs()) and time.monotonic() < deadline:
                time.sleep(0.25)
            leftovers += [f"job {j}" for j in jobs]
        for daemon in reversed(DAEMONS):
            pid = self.pids().get(daemon)
            if pid is not None and pid_alive(pid, daemon):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while pid_alive(pid, daemon) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if pid_alive(pid, daemon):
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.5)
                if pid_alive(pid, daemon):
                    leftovers.append(f"{daemon} (pid {pid})")
            self.pid_file(daemon).unlink(missing_ok=True)
        self._unlink_system_conf()
        if leftovers:
            raise ClusterError(f"still running after stop: {', '.join(leftovers)}")

    def active_jobs(self) -> list[str]:
        """Ids of jobs pending, running or completing."""
        done = subprocess.run(["squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i"], env=self.env,
                              capture_output=True, text=True, timeout=30)
        return done.stdout.split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path, help="directory for slurm.conf, state, logs and pid files")
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.dir)
    try:
        if args.action == "start":
            cluster.start()
            print(f"SLURM up: node {cluster.node} idle, partition {cluster.partition}.\n"
                  f"export SLURM_CONF={cluster.conf}")
        else:
            cluster.stop()
            print(f"stopped the daemons of {cluster.root}")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
