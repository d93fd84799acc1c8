"""A real multi-node Ray cluster on this machine, and `countnet search` run against it.

Every node is a `ray start --block` process in its own session, so a node can be lost the way a
machine is lost (SIGKILL to all of its processes at once) and every test tears its processes down
by their ids (the session's pids, read from /proc), never by name. Each node has a custom
resource `node_<name>` that names it in `ray.nodes()`. The cluster keeps Ray's token
authentication on (RAY_AUTH_MODE=token, the user's ~/.ray/auth_token) and has its own temp dir,
so a plain `ray.init()` elsewhere on the machine never finds it.

The test process itself never connects to Ray: it reads what a user reads (the experiment
directory on the shared storage) and asks the cluster through short driver subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent
RAY = shutil.which("ray", path=str(BIN)) or "ray"
COUNTNET = shutil.which("countnet", path=str(BIN)) or "countnet"
SPACE_FILE = Path(__file__).with_name("space.yaml")
NODE_START_TIMEOUT_S = 90  # hang guards, not timings: a healthy start takes a few seconds
SEARCH_TIMEOUT_S = 240
POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(leader: int) -> list[int]:
    """Every live process of the session that `leader` started (start_new_session=True).

    Ray puts each worker in its own process group but leaves it in the session, so the session
    is the whole node: `ray start`, its raylet, agents and trial workers.
    """
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == leader and fields[0] != "Z":  # fields: state ppid pgrp session
                pids.append(int(stat.parent.name))
    return pids


def kill_session(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal every process of `proc`'s session at once, each by its pid."""
    for pid in session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_session(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the session (Ray stops its node cleanly), then SIGKILL whatever is left."""
    kill_session(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_session(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    cpus: float
    gpus: float
    log: Path


@dataclass
class LocalCluster:
    """Head + worker nodes of one Ray cluster, all on this machine."""

    root: Path  # short: Ray's socket paths live under it
    port: int = field(default_factory=free_port)
    nodes: dict[str, RayNode] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every Ray process and driver of this cluster."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        # Explicit: Ray enables token auth on its own only for a new ray.init() cluster or
        # address "auto"; `countnet search --address HOST:PORT` needs it said.
        env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        return env

    def add_node(self, name: str, cpus: float = 1, gpus: float = 0) -> RayNode:
        """Start a node (the first one is the head) and wait until the cluster sees it."""
        head = not self.nodes
        args = [RAY, "start", "--block", "--disable-usage-stats", f"--num-cpus={cpus:g}",
                f"--num-gpus={gpus:g}", "--object-store-memory=80000000",
                f"--resources={json.dumps({f'node_{name}': 1})}",
                f"--dashboard-agent-listen-port={free_port()}"]
        if head:
            args += ["--head", f"--port={self.port}", f"--temp-dir={self.root / 'ray'}",
                     "--include-dashboard=false", f"--ray-client-server-port={free_port()}"]
        else:
            args += [f"--address={self.address}"]
        log = self.root / f"node-{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        node = RayNode(name, proc, cpus, gpus, log)
        self.nodes[name] = node
        self.wait_for_nodes()
        return node

    def kill_node(self, name: str) -> None:
        """Lose a node like a crashed machine: SIGKILL to its raylet and all its workers."""
        node = self.nodes.pop(name)
        kill_session(node.proc)
        node.proc.wait(30)

    def remove_node(self, name: str) -> None:
        """Stop a node cleanly (used to restore the cluster between tests)."""
        stop_session(self.nodes.pop(name).proc)

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id, of the alive nodes."""
        return {name: info["NodeID"] for name, info in self.alive_nodes().items()}

    def alive_nodes(self, expect: set[str] | None = None,
                    timeout_s: float = NODE_START_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Ask the cluster (a short driver) for its alive nodes, keyed by node name; with
        `expect`, wait until exactly those nodes are alive."""
        code = (
            "import json, sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
            f"expect = {sorted(expect) if expect is not None else None!r}\n"
            f"deadline = time.time() + {timeout_s}\n"
            "while True:\n"
            "    alive = {k[5:]: n for n in ray.nodes() if n['Alive']\n"
            "             for k in n['Resources'] if k.startswith('node_')}\n"
            "    if expect is None or sorted(alive) == expect or time.time() > deadline:\n"
            "        break\n"
            "    time.sleep(0.2)\n"
            "print('NODES=' + json.dumps(alive))\n")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True,
                             text=True, timeout=timeout_s + 60)
        lines = [x for x in out.stdout.splitlines() if x.startswith("NODES=")]
        assert out.returncode == 0 and lines, out.stderr[-3000:]
        nodes = json.loads(lines[-1][len("NODES="):])
        if expect is not None:
            assert set(nodes) == expect, (sorted(nodes), sorted(expect), self.logs())
        return nodes

    def wait_for_nodes(self) -> dict[str, dict[str, Any]]:
        for node in self.nodes.values():
            assert node.proc.poll() is None, f"node {node.name} exited: {self.logs()}"
        return self.alive_nodes(set(self.nodes))

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-1500:]}" for n in self.nodes.values())

    def shutdown(self) -> None:
        """Workers first, then the head; each by its own process group."""
        for name in [n for n in self.nodes if n != "head"] + ["head"]:
            if name in self.nodes:
                self.remove_node(name)


# name -> (CPUs, GPUs). As in cluster.yaml, the head runs no trials (CPU 0): every trial runs on
# a 1-CPU worker node, so a test can lose any node that runs a trial without losing the cluster.
BASE_NODES = {"head": (0, 0), "w1": (1, 0), "w2": (1, 0)}


@pytest.fixture(scope="package")
def _cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="cn-", dir="/tmp"))  # short: unix socket paths
    cluster = LocalCluster(root)
    try:
        # One at a time: two `ray start` of one machine at once can hang.
        for name, (cpus, gpus) in BASE_NODES.items():
            cluster.add_node(name, cpus, gpus)
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The package's cluster, as BASE_NODES at the start of every test and after it (a test
    may kill a node or add one)."""
    yield _cluster
    extra = [n for n in _cluster.nodes if n not in BASE_NODES]
    missing = [n for n in BASE_NODES if n not in _cluster.nodes]
    for name in extra:
        _cluster.remove_node(name)
    for name in missing:
        _cluster.add_node(name, *BASE_NODES[name])  # waits for all of them
    if extra and not missing:
        _cluster.wait_for_nodes()  # until the cluster no longer lists the removed nodes


# --- spaces and searches -----------------------------------------------------------------------


def write_space(path: Path, fixed: dict[str, Any] | None = None, **top: Any) -> Path:
    """tests/cluster/space.yaml with some fields changed, written to `path`."""
    space = yaml.safe_load(SPACE_FILE.read_text())
    space["fixed"].update(fixed or {})
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(space.get(key), dict):
            space[key].update(value)
        else:
            space[key] = value
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@dataclass
class Search:
    """One `countnet search` driver process and its experiment directory."""

    proc: subprocess.Popen
    exp_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout_s: float = SEARCH_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_session(self.proc)
            pytest.fail(f"search still running after {timeout_s}s:\n{self.output()[-4000:]}")


def start_search(cluster: LocalCluster, args: list[str], exp_dir: Path, log: Path) -> Search:
    """`countnet search ARGS --address CLUSTER` as its own process group."""
    with log.open("w") as out:
        proc = subprocess.Popen([COUNTNET, "search", *args, "--address", cluster.address],
                                env=cluster.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Search(proc, exp_dir, log)


@pytest.fixture
def searches() -> Iterator[Callable[..., Search]]:
    """start_search, with every driver this test started killed at the end, pass or fail."""
    started: list[Search] = []

    def start(*args: Any, **kwargs: Any) -> Search:
        started.append(start_search(*args, **kwargs))
        return started[-1]

    yield start
    for s in started:
        kill_session(s.proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.proc.wait(30)


def search_args(space: Path, storage: Path, name: str) -> list[str]:
    return ["--space", str(space), "--storage", str(storage), "--name", name]


# --- reading the experiment as it runs ---------------------------------------------------------


def read_results(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """trial id -> its reported results so far, in order (Ray's result.json, one line each)."""
    out = {}
    for f in sorted(exp_dir.glob("trial_*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                rows.append(json.loads(line))
        out[f.parent.name.removeprefix("trial_")] = rows
    return out


def epochs(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["epoch"]) for r in rows]


@dataclass
class Watch:
    """Poll the experiment directory while a search runs.

    Remembers when each checkpoint of each trial was written (its directory's mtime, read
    before Ray deletes it for num_to_keep): a result row names its checkpoint
    (`checkpoint_dir_name`), so `reported_at(trial, row)` is the wall-clock time of that report,
    as the worker wrote it, whatever the driver's delay in writing result.json.
    """

    exp_dir: Path
    search: Search
    checkpoints: dict[tuple[str, str], float] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def poll(self) -> dict[str, list[dict[str, Any]]]:
        for ckpt in self.exp_dir.glob("trial_*/checkpoint_*"):
            key = (ckpt.parent.name.removeprefix("trial_"), ckpt.name)
            if key not in self.checkpoints:
                with contextlib.suppress(OSError):  # deleted meanwhile
                    self.checkpoints[key] = ckpt.stat().st_mtime
        self.results = read_results(self.exp_dir)
        return self.results

    def until(self, predicate: Callable[[dict[str, list[dict[str, Any]]]], Any],
              timeout_s: float = SEARCH_TIMEOUT_S) -> Any:
        """Poll until predicate(results) is truthy; return its value. Fails if the search ends
        first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate(self.poll())
            if value:
                return value
            if self.search.proc.poll() is not None:
                value = predicate(self.poll())
                if value:
                    return value
                pytest.fail("search ended before the awaited state:\n"
                            + self.search.output()[-4000:])
            time.sleep(POLL_S)
        pytest.fail(f"awaited state not reached in {timeout_s}s:\n{self.search.output()[-4000:]}")

    def to_end(self, timeout_s: float = SEARCH_TIMEOUT_S) -> int:
        """Poll until the search process exits; its exit code."""
        self.until(lambda _: self.search.proc.poll() is not None, timeout_s)
        self.poll()
        return self.search.wait()

    def last_report(self, trial: str) -> tuple[str, float]:
        """(name, time) of the newest checkpoint `trial` has written: its worker's progress,
        which result.json (written later, by the driver) may not show yet."""
        return max(((name, t) for (tr, name), t in self.checkpoints.items() if tr == trial),
                   key=lambda item: item[1])

    def reported_at(self, trial: str, row: dict[str, Any]) -> float:
        """Wall-clock time (time.time()) at which the worker reported `row`."""
        return self.checkpoints[(trial, row["checkpoint_dir_name"])]

    def epochs_trained(self) -> int:
        """Epoch reports with a checkpoint, over every trial directory (also ones the search
        forgot): the training work done, repeated work included."""
        return len(self.checkpoints)


def report(title: str, **figures: Any) -> None:
    """Print measured figures (run pytest with -s to see them); never asserted on."""
    text = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in figures.items())
    print(f"\nFIGURES {title}: {text}", flush=True)
