"""Helpers of the benchmarks: servers we start and stop by PID, CPU accounting, profiles,
scratch databases."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

TICK = os.sysconf("SC_CLK_TCK")
PG_ADMIN = os.environ.get("MIAOPI_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server of :data:`PG_ADMIN`."""
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A database of the benchmark's own for the block (its URL), dropped afterwards."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        drop_database(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> tuple[int, int] | None:
    """(utime + stime in ticks, start time) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12]), int(rest[19])


def cpu_seconds(pid: int) -> float:
    """The CPU (user + system) a running process has used so far, in seconds: a benchmark
    reads its PostgreSQL backend's before and after the work it measures."""
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return stat[0] / TICK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in _children(c)]


def _by_name(prefix: str) -> list[int]:
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip().startswith(prefix):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: dict[int, int] = field(default_factory=dict)  # pid -> start time, ours only

    @classmethod
    def start(
        cls, name: str, command: list[Any], port: int, env: dict[str, str], log: Path
    ) -> Server:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(c) for c in command], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        return cls(name, proc, port, log)

    def pids(self) -> list[int]:
        """The server process and its workers (remembered, so stop() can check them)."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        for pid in pids:
            stat = _stat(pid)
            if stat is not None:
                self.started.setdefault(pid, stat[1])
        return pids

    def stop(self) -> None:
        """Terminate, wait, kill if needed; then any worker of ours that outlived it."""
        self.pids()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid, started in self.started.items():
            stat = _stat(pid)
            if pid != self.proc.pid and stat is not None and stat[1] == started:
                os.kill(pid, 9)  # same PID and same start time: still our worker


def wait_healthy(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{server.port}/healthz"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited; see {server.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    time.sleep(1)  # every worker up, not only the first
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{server.name} did not become healthy in {timeout:g} s; see {server.log}")


#: the service's own counts a benchmark reads before and after its run (``/metrics``):
#: two counters, and histograms whose count and sum it keeps
SERVICE_COUNTERS = {
    "miaopi_fact_cache_hits": "fact_cache_hits",
    "miaopi_fact_cache_misses": "fact_cache_misses",
    "miaopi_write_group_size": "group_size",
    "miaopi_decision_seconds": "decision",
    "miaopi_fact_read_seconds": "fact_read",
    "miaopi_write_queue_seconds": "write_queue",
    "miaopi_write_group_seconds": "write_group",
}
#: the histograms of seconds whose mean a run reports (in ms), in the README's order
STAGES = ("decision", "fact_read", "write_queue", "write_group")


def service_counters(port: int) -> dict[str, float] | None:
    """:func:`parse_counters` of the server's ``/metrics``; None where it has no such
    page (the baseline). Workers pass their counts on once a second: scrape a second
    after the load stops."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return parse_counters(answer.read().decode())
    except (OSError, ValueError):  # no such page, or not an exposition
        return None


def parse_counters(text: str) -> dict[str, float]:
    """The totals of :data:`SERVICE_COUNTERS` in a Prometheus exposition, every label and
    worker added up: ``fact_cache_hits``, ``group_size_count`` (groups),
    ``group_size_sum`` (their applications), ``fact_read_sum`` (seconds) and so on;
    for a family labelled by ``path`` (the writer's groups) also each way's own, as
    ``write_group_count@at_once`` beside the total ``write_group_count``."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = SERVICE_COUNTERS.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            suffix = sample.name.rsplit("_", 1)[-1]
            if suffix in ("total", "count", "sum"):
                key = name if suffix == "total" else f"{name}_{suffix}"
                totals[key] = totals.get(key, 0.0) + sample.value
                path = sample.labels.get("path")
                if path is not None:  # the writer's groups, also by the way each went
                    totals[f"{key}@{path}"] = totals.get(f"{key}@{path}", 0.0) + sample.value
    return totals


def counters_between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the service counted during a run: the fact reads that hit and missed the
    cache, the writer's groups and mean group, and each stage's mean time in ms.

    The means are the service's own: ``decision`` of each new record (from reading its
    facts to its record committed), ``fact_read`` of each application, ``write_queue``
    (its first application's wait) and ``write_group`` of each group, so the stages do
    not add up to the decision. A group that failed counts once, and then each of its
    applications again as a group of one (rare: a raced key, a deadlock).
    ``write_group_paths``: per way a group went (``at_once``, one round trip;
    ``checked``, stamps read first; ``refused_at_once``, refused and then checked;
    ``failed``), its groups, their share and mean ms."""
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    hits, misses = delta.get("fact_cache_hits", 0.0), delta.get("fact_cache_misses", 0.0)
    groups = delta.get("group_size_count", 0.0)
    out: dict[str, Any] = {
        "fact_cache_hits": round(hits),
        "fact_cache_misses": round(misses),
        "fact_cache_miss_share": round(misses / (hits + misses), 4) if hits + misses else 0.0,
        "write_groups": round(groups),
        "mean_group_size": round(delta.get("group_size_sum", 0.0) / groups, 2) if groups else 0.0,
    }
    for stage in STAGES:
        count = delta.get(f"{stage}_count", 0.0)
        if count:
            out[f"{stage}_mean_ms"] = round(1000 * delta.get(f"{stage}_sum", 0.0) / count, 3)
    # the way the groups went (one round trip, or stamps read first) and each way's time
    by_path: dict[str, dict[str, float]] = {}
    for key, value in sorted(delta.items()):
        stage, by, path = key.partition("@")
        if stage == "write_group_count" and by and value:
            mean = 1000 * delta.get(f"write_group_sum@{path}", 0.0) / value
            by_path[path] = {"groups": round(value), "mean_ms": round(mean, 3)}
    if by_path:
        total = sum(way["groups"] for way in by_path.values())
        for way in by_path.values():
            way["share"] = round(way["groups"] / total, 4)
        out["write_group_paths"] = by_path
    return out


def _machine_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


class Cpu:
    """CPU seconds of the server's processes, of PostgreSQL and Redis, and machine busy %.

    PostgreSQL and Redis are shared with anything else running on the machine: their
    figures are only clean on an otherwise idle machine. The machine's busy share comes
    from /proc/stat, whose ticks can fall behind the wall clock on an oversubscribed
    VM host, so it is not subtracted from anything.
    """

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self.before: dict[str, dict[int, int]] = {}
        self.after: dict[str, dict[int, int]] = {}
        self.wall = 0.0
        self.machine: tuple[int, int] = (0, 0)

    def _snapshot(self) -> dict[str, dict[int, int]]:
        groups = {
            "server": self.server_pids,
            "postgres": _by_name("postgres"),
            "redis": _by_name("redis-server"),
        }
        out: dict[str, dict[int, int]] = {}
        for name, pids in groups.items():
            out[name] = {}
            for pid in pids:
                stat = _stat(pid)
                if stat is not None:
                    out[name][pid] = stat[0]
        return out

    def start(self) -> None:
        self.before = self._snapshot()
        self.wall = time.perf_counter()
        self.machine = _machine_ticks()

    def stop(self) -> None:
        self.after = self._snapshot()
        self.wall = time.perf_counter() - self.wall
        total, idle = _machine_ticks()
        self.machine = (total - self.machine[0], idle - self.machine[1])

    def report(self, answered: int) -> dict[str, float]:
        out: dict[str, float] = {"wall_s": round(self.wall, 2)}
        for name, after in self.after.items():
            before = self.before.get(name, {})
            seconds = sum(t - before.get(pid, 0) for pid, t in after.items()) / TICK
            out[f"{name}_cpu_s"] = round(seconds, 2)
            out[f"{name}_ms_per_request"] = round(1000 * seconds / answered, 3)
        total, idle = self.machine
        out["machine_busy_percent"] = round(100 * (total - idle) / max(total, 1), 1)
        out["machine_busy_cpu_s"] = round((total - idle) / TICK, 2)
        return out


AREAS = (
    ("PostgreSQL client (psycopg, SQLAlchemy)", ("psycopg", "sqlalchemy")),
    ("Redis client", ("redis/", "hiredis")),
    ("rules engine", ("approval_service/engine", "approval_service/policy")),
    ("registry facts, fact cache", ("data_lookups/",)),
    ("service layer", ("approval_service/service",)),
    ("API layer", ("approval_service/api",)),
    ("FastAPI, Starlette, Pydantic", ("fastapi/", "starlette/", "pydantic")),
    ("uvicorn, HTTP parsing", ("uvicorn/", "httptools", "h11")),
    ("JSON", ("orjson", "json/")),
    ("logging, metrics", ("logging/", "prometheus_client")),
    ("asyncio, anyio, threads", ("asyncio/", "anyio/", "threading.py", "concurrent/")),
)


_LINE = re.compile(r":\d+\)$")


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):  # the innermost frame that belongs to an area decides
        for name, needles in AREAS:
            if any(n in frame for n in needles):
                return name
    return "other"


def profile_summary(raw: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples by area, by innermost function, and by our own functions (inclusive)."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]  # by function, not line
        total += count
        areas[_area(frames)] += count
        leaves[frames[-1]] += count
        for frame in set(frames):
            if "approval_service/" in frame or "data_lookups/" in frame:
                ours[frame] += count
    share = max(total, 1)
    return {
        "samples": total,
        "areas": {k: round(v / share, 4) for k, v in areas.most_common()},
        "innermost": {k: round(v / share, 4) for k, v in leaves.most_common(top)},
        "ours_inclusive": {k: round(v / share, 4) for k, v in ours.most_common(top)},
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }


def code_revision(root: Path) -> dict[str, Any]:
    """The commit the measured code is at, and whether files differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain")),
    }
