"""End-to-end benchmark: miaopi on PostgreSQL + Redis under an open-loop load, against a floor.

One command (not collected by pytest)::

    .venv/bin/python benchmarks/e2e.py [--people 1000000] [--rate 5000] [--duration 60]
                                       [--workers 2] [--warmup S] [--no-profile]

Steps, all on 127.0.0.1:

1. generate a registry of ``--people`` residents (cached under ``var/bench/`` by
   people, seed and business date);
2. create a fresh PostgreSQL database ``miaopi_bench_<pid>`` (user postgres, trust
   auth on 127.0.0.1:5432), ``miaopi data import`` the registry into it, and
   ``miaopi data warm`` every resident's facts into Redis
   (redis://127.0.0.1:6379/0, key prefix ``miaopi_bench_<pid>:``);
3. start ``miaopi serve --workers W`` with that database, Redis and a fresh API key;
   open its connections with a few seconds of prechecks; run
   ``miaopi loadtest`` at ``--rate`` for ``--duration``; then, unless ``--no-profile``,
   a shorter run of the same load during which py-spy samples the workers (wall time,
   then GIL holders), kept apart because sampling slows the server down;
4. start the trivial baseline app (``benchmarks/baseline_app.py``: parse the body, one
   Redis HGETALL, a constant answer) under uvicorn with the same workers and run the
   same load test against it;
5. stop both servers (only the processes started here, by PID), drop the database,
   delete the Redis keys, print a table and write ``var/bench/e2e-<stamp>.json``
   (both runs, the ratios, CPU by process group, miaopi's own counts of fact-cache
   misses and write groups from ``/metrics``, the machine, the date, the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import (
    PG_ADMIN,
    Cpu,
    Server,
    code_revision,
    counters_between,
    database_url,
    drop_database,
    free_port,
    machine,
    profile_summary,
    service_counters,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def registry_for(people: int, seed: int, as_of: str) -> Path:
    folder = ROOT / "var" / "bench" / f"registry-{people}-s{seed}-{as_of}"
    marker = folder / ".complete"
    if marker.exists():
        print(f"registry: reusing {folder}")
        return folder
    started = time.perf_counter()
    subprocess.run(
        [
            BIN / "miaopi",
            "data",
            "generate",
            folder,
            "--people",
            str(people),
            "--seed",
            str(seed),
            "--as-of",
            as_of,
        ],
        check=True,
        cwd=ROOT,
    )
    marker.write_text(f"generated in {time.perf_counter() - started:.1f} s\n")
    return folder


def loadtest(
    url: str, args: argparse.Namespace, env: dict[str, str], registry: Path, out: Path, **extra: Any
) -> tuple[dict[str, Any], threading.Event]:
    """Start ``miaopi loadtest``: a dict filled when it ends, and an event set when it sends."""
    command = [str(BIN / "miaopi"), "loadtest", "--url", url, "--json", "--registry", str(registry)]
    command += ["--rate", str(extra.get("rate", args.rate))]
    command += ["--duration", str(extra.get("duration", args.duration))]
    command += ["--connections", str(args.connections), "--seed", str(args.seed), "--out", str(out)]
    if extra.get("precheck_share"):
        command += ["--precheck-share", str(extra["precheck_share"]), "--no-png"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sending = threading.Event()
    result: dict[str, Any] = {}

    def pump() -> None:
        assert proc.stderr is not None and proc.stdout is not None
        log: list[str] = []
        for line in proc.stderr:
            log.append(line)
            if "sending at" in line:
                sending.set()
        result.update(json.loads(proc.stdout.read() or "{}"))
        result["_stderr"] = "".join(log)
        result["_exit"] = proc.wait()
        sending.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    result["_thread"] = thread
    return result, sending


def drive(
    name: str,
    server: Server,
    args: argparse.Namespace,
    env: dict[str, str],
    registry: Path,
    out: Path,
    warmup: float,
    *,
    duration: float | None = None,
    profile_it: bool = False,
) -> dict[str, Any]:
    """Optional warm-up, then one load test; with ``profile_it``, py-spy records meanwhile."""
    url = f"http://127.0.0.1:{server.port}"
    duration = duration or args.duration
    if warmup > 0:
        rate = min(args.rate, 200)
        print(f"{name}: warm-up, prechecks at {rate:g}/s for {warmup:g} s (opens connections)")
        warm, _ = loadtest(
            url, args, env, registry, out / f"{name}-warmup",
            duration=warmup, precheck_share=1.0, rate=rate,
        )  # fmt: skip
        warm["_thread"].join()
        print(f"{name}: warm-up {warm.get('throughput')}/s, errors {warm.get('errors')}")
    print(f"{name}: load test at {args.rate:g}/s for {duration:g} s")
    time.sleep(1.2)  # every worker has passed its warm-up counts on (once a second)
    counted = service_counters(server.port)
    cpu = Cpu(server.pids())
    load_before = round(os.getloadavg()[0], 2)
    result, sending = loadtest(url, args, env, registry, out / name, duration=duration)
    sending.wait(timeout=600)
    cpu.start()
    profile: dict[str, Any] = {}
    if profile_it:
        # two py-spy recordings of every worker: all busy threads (wall time, includes
        # waiting on PostgreSQL and Redis sockets), then only the thread holding the GIL
        # (where the Python CPU goes). Sampling slows the server down, which is why
        # this is a separate run from the measured one.
        span = max(1, min(10, int(duration * 0.4)))
        time.sleep(duration / 5)
        for kind, extra in (("wall", []), ("gil", ["--gil"])):
            raw = out / f"profile-miaopi-{kind}.txt"
            subprocess.run(
                [BIN / "py-spy", "record", "--pid", str(server.proc.pid), "--subprocesses",
                 "--nonblocking", *extra, "--duration", str(span), "--format", "raw",
                 "-o", str(raw)],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if raw.exists():
                profile[kind] = {"raw": str(raw.relative_to(ROOT)), **profile_summary(raw)}
    result["_thread"].join()
    cpu.stop()
    if result.get("_exit") != 0:
        print(result.get("_stderr", ""), file=sys.stderr)
        raise SystemExit(f"{name}: loadtest failed with exit {result.get('_exit')}")
    del result["_thread"], result["_stderr"], result["_exit"]
    answered = max(result["answered"], 1)
    result["cpu"] = cpu.report(answered)
    result["cpu"]["load_average_before"] = load_before
    if counted is not None:
        time.sleep(1.2)
        after = service_counters(server.port)
        if after is not None:
            result["service"] = counters_between(counted, after)
        else:
            print(f"{name}: /metrics did not answer after the run: no service counts")
    if profile:
        result["profile"] = profile
    return result


def summary_table(real: dict[str, Any], base: dict[str, Any]) -> str:
    rows = [
        ("throughput /s", "throughput", None),
        ("errors", "errors", None),
        ("p50 ms", "latency_ms", "p50"),
        ("p90 ms", "latency_ms", "p90"),
        ("p99 ms", "latency_ms", "p99"),
        ("p99.9 ms", "latency_ms", "p999"),
        ("max ms", "latency_ms", "max"),
        ("server CPU ms/request", "cpu", "server_ms_per_request"),
        ("postgres CPU ms/request", "cpu", "postgres_ms_per_request"),
        ("redis CPU ms/request", "cpu", "redis_ms_per_request"),
        ("machine busy %", "cpu", "machine_busy_percent"),
        ("load average before", "cpu", "load_average_before"),
        ("generator CPU %", "generator_cpu_percent", None),
        ("send lag p99 ms", "send_lag_ms", "p99"),
        ("fact cache miss share", "service", "fact_cache_miss_share"),
        ("applications per group", "service", "mean_group_size"),
        ("decision mean ms", "service", "decision_mean_ms"),
        ("fact read mean ms", "service", "fact_read_mean_ms"),
        ("write queue mean ms/group", "service", "write_queue_mean_ms"),
        ("write group mean ms/group", "service", "write_group_mean_ms"),
    ]
    lines = [f"{'':26}{'miaopi':>14}{'baseline':>14}{'ratio':>10}"]
    for label, key, sub in rows:
        a, b = real.get(key), base.get(key)
        if sub is not None:
            a, b = (a or {}).get(sub), (b or {}).get(sub)
        comparable = isinstance(a, int | float) and b and not label.startswith("load")
        ratio = f"{a / b:10.2f}" if comparable else f"{'':>10}"  # type: ignore[operator]
        lines.append(f"{label:26}{a!s:>14}{b!s:>14}{ratio}")
    for path, way in (real.get("service") or {}).get("write_group_paths", {}).items():
        figures = f"{way['share']:.1%} of groups, {way['mean_ms']} ms"
        lines.append(f"{'  groups ' + path:26}{figures:>28}")
    return "\n".join(lines)


def settle(database: str | None) -> None:
    """Write PostgreSQL's dirty pages out now (``CHECKPOINT``), and ``VACUUM`` the
    database if given, so that neither runs in the middle of the next measured run."""
    if database is not None:
        with psycopg.connect(database_url(database), autocommit=True) as db:
            db.execute("VACUUM")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of precheck warm-up (at most 200/s) before the measured run (default 5); "
        "the facts of every resident are put in Redis by `miaopi data warm` before that",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--report", type=Path, default=None,
        help="where to write the JSON report (default var/bench/e2e-<time>.json)",
    )  # fmt: skip
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "var" / "bench" / f"e2e-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    as_of = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    registry = registry_for(args.people, args.seed, as_of)

    pid = os.getpid()
    database = f"miaopi_bench_{pid}"
    prefix = f"miaopi_bench_{pid}:"
    key = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "MIAOPI_DATABASE_URL": database_url(database),
        "MIAOPI_REDIS_URL": REDIS_URL,
        "MIAOPI_REDIS_PREFIX": prefix,
        "MIAOPI_API_KEYS": f"bench:{key}",
        "MIAOPI_LOADTEST_KEY": key,
        "BASELINE_REDIS_URL": REDIS_URL,
        "BASELINE_KEY": f"{prefix}baseline",
    }
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "code": code_revision(ROOT),
        "parameters": {
            **vars(args),
            "registry": str(registry.relative_to(ROOT)),
            "report": None if args.report is None else str(args.report),
        },
    }
    servers: list[Server] = []
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        print(f"database {database}: importing {registry.name}")
        started = time.perf_counter()
        subprocess.run([BIN / "miaopi", "data", "import", registry], cwd=ROOT, env=env, check=True,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        report["import_s"] = round(time.perf_counter() - started, 1)
        print(f"imported in {report['import_s']} s")
        started = time.perf_counter()
        subprocess.run([BIN / "miaopi", "data", "warm"], cwd=ROOT, env=env, check=True)
        report["warm_s"] = round(time.perf_counter() - started, 1)
        print(f"Redis warmed with every resident's facts in {report['warm_s']} s")

        settle(database)  # the import's dirty pages are not the run's to write
        port = free_port()
        serve = [BIN / "miaopi", "serve", "--port", str(port), "--workers", str(args.workers)]
        servers.append(Server.start("miaopi", serve, port, env, out / "serve.log"))
        wait_healthy(servers[-1])
        warmup = 5 if args.warmup is None else args.warmup
        report["miaopi"] = drive("miaopi", servers[-1], args, env, registry, out, warmup)
        if args.profile:
            profiled = drive(
                "miaopi-profiled", servers[-1], args, env, registry, out, 0,
                duration=min(args.duration, 25), profile_it=True,
            )  # fmt: skip
            report["miaopi"]["profile"] = profiled.pop("profile", {})
            report["miaopi_profiled_run"] = {
                k: profiled[k] for k in ("throughput", "errors", "latency_ms", "duration_s")
            }
        servers.pop().stop()

        if not args.skip_baseline:
            # the baseline needs no database: dropped now, so that neither its autovacuum
            # nor the checkpoint of what miaopi wrote runs during the baseline's run
            drop_database(database)
            settle(None)
            redis.Redis.from_url(REDIS_URL).hset(
                f"{prefix}baseline", mapping={"status": "alive", "hukou_region": "341602"}
            )
            port = free_port()
            uvicorn = [BIN / "uvicorn", "--app-dir", str(ROOT / "benchmarks"), "--factory"]
            uvicorn += ["baseline_app:create_app", "--host", "127.0.0.1", "--port", str(port)]
            uvicorn += ["--workers", str(args.workers), "--log-level", "warning", "--no-access-log"]
            servers.append(Server.start("baseline", uvicorn, port, env, out / "baseline.log"))
            wait_healthy(servers[-1])
            warm = min(warmup, 5)
            report["baseline"] = drive("baseline", servers[-1], args, env, registry, out, warm)
            servers.pop().stop()
    finally:
        for server in servers:
            server.stop()
        drop_database(database)
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(stale), 1000):
            client.delete(*stale[start : start + 1000])

    real, base = report["miaopi"], report.get("baseline", {})
    if base:
        report["ratio"] = {
            "throughput": round(real["throughput"] / base["throughput"], 3),
            "p50": round(real["latency_ms"]["p50"] / base["latency_ms"]["p50"], 2),
            "p99": round(real["latency_ms"]["p99"] / base["latency_ms"]["p99"], 2),
            "server_cpu_per_request": round(
                real["cpu"]["server_ms_per_request"] / base["cpu"]["server_ms_per_request"], 2
            ),
        }
    path = (args.report or ROOT / "var" / "bench" / f"e2e-{stamp}.json").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    print(f"{args.people} residents, {args.rate:g}/s for {args.duration:g} s, "
          f"{args.workers} workers, {report['machine']['nproc']} CPUs "
          f"({report['machine']['cpu_model']}), python {platform.python_version()}")  # fmt: skip
    print(summary_table(real, base))
    if "miaopi_profiled_run" in report:
        run = report["miaopi_profiled_run"]
        print(
            f"\nprofiled run ({run['duration_s']:g} s, py-spy attached): "
            f"{run['throughput']}/s, errors {run['errors']}, "
            f"p50 {run['latency_ms']['p50']} ms, p99 {run['latency_ms']['p99']} ms"
        )
    for kind, title in (("wall", "busy threads, incl. waiting"), ("gil", "holding the GIL")):
        if kind in real.get("profile", {}):
            print(f"\nwhere the workers' time goes (py-spy, {title}):")
            for area, share in real["profile"][kind]["areas"].items():
                print(f"  {area:42}{share:6.1%}")
    print(
        f"\nreport: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
        f"(load test reports and PNGs in {out.relative_to(ROOT)})"
    )
    print(f"reproduce: {report['command']}")


if __name__ == "__main__":
    main()
