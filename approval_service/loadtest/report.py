"""From a recorded run to numbers: HDR-histogram percentiles, the JSON report, a PNG, a table.

Latency is recorded per request in nanoseconds from its scheduled send time; the
histogram keeps microseconds with three significant digits (HdrHistogram), which is
what the percentiles are read from. A request counts as an error when it got no HTTP
answer (connection error, timeout, never sent before the drain ended, abandoned by
Ctrl-C) or an answer other than the one expected: 2xx for an application, 422 for an
invalid ID.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]
from numpy.typing import NDArray
from rich.table import Table

from approval_service.loadtest.mix import ITEMS, Plan
from approval_service.loadtest.run_result import (
    ABANDONED,
    CONNECTION_ERROR,
    OUTCOMES,
    TIMEOUT,
    UNSENT,
    RunResult,
)

#: the generator is behind its schedule when its p99 send lag exceeds this (the loop's
#: timers have 1 ms resolution, and a burst of answers is handled before the next timer)
LAG_WARN_MS = 10.0
#: ... or when any request was dispatched this late
LAG_MAX_WARN_MS = 100.0
#: ... or when it used more than this share of one core
CPU_WARN_PERCENT = 80.0
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
_FAILURES = {
    CONNECTION_ERROR: "connection",
    TIMEOUT: "timeout",
    UNSENT: "unsent",
    ABANDONED: "abandoned",
}


def histogram(latencies_us: NDArray[np.int64]) -> Any:
    """An HdrHistogram (1 us .. 1 h, 3 significant digits) of the given microseconds."""
    hist = HdrHistogram(1, 3_600_000_000, 3)
    values, counts = np.unique(np.clip(latencies_us, 1, 3_600_000_000), return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        hist.record_value(value, count)
    return hist


def latency_ms(latencies_ns: NDArray[np.int64]) -> dict[str, float]:
    """p50/p90/p99/p999 from the HDR histogram, exact max and mean, in milliseconds."""
    if latencies_ns.size == 0:
        return {**dict.fromkeys(PERCENTILES, 0.0), "max": 0.0, "mean": 0.0}
    hist = histogram(latencies_ns // 1000)
    top = round(float(latencies_ns.max()) / 1e6, 3)
    # the histogram reports a bucket's highest equivalent value: never above the true max
    out = {
        name: min(top, round(hist.get_value_at_percentile(p) / 1000, 3))
        for name, p in PERCENTILES.items()
    }
    out["max"] = top
    out["mean"] = round(float(latencies_ns.mean()) / 1e6, 3)
    return out


def _spread_ms(values_ns: NDArray[np.int64]) -> dict[str, float]:
    if values_ns.size == 0:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(values_ns, [50, 99])
    return {
        "p50": round(float(p50) / 1e6, 3),
        "p99": round(float(p99) / 1e6, 3),
        "max": round(float(values_ns.max()) / 1e6, 3),
    }


def error_kinds(result: RunResult, plan: Plan) -> dict[str, int]:
    """Errors by kind: ``connection``, ``timeout``, ``unsent``, ``abandoned``, ``http_<status>``."""
    status = np.frombuffer(result.status, dtype=np.int16)
    expect_422 = np.frombuffer(plan.expect_422, dtype=np.uint8).astype(bool)
    ok = np.where(expect_422, status == 422, (status >= 200) & (status < 300))
    kinds: dict[str, int] = {}
    values, counts = np.unique(status[~ok], return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        kinds[_FAILURES.get(value, f"http_{value}")] = count
    return kinds


def summarize(result: RunResult, plan: Plan, *, url: str, connections: int) -> dict[str, Any]:
    """The report as a JSON-ready dict (the contract's keys first)."""
    status = np.frombuffer(result.status, dtype=np.int16)
    latency = np.frombuffer(result.latency_ns, dtype=np.int64)
    answered = status > 0
    kinds = error_kinds(result, plan)
    errors = sum(kinds.values())
    outcome = np.frombuffer(result.outcome, dtype=np.uint8)
    items = np.frombuffer(plan.items, dtype=np.uint8)
    outcomes = {name: int((outcome == code).sum()) for code, name in enumerate(OUTCOMES) if code}
    outcomes["invalid_id"] = int(
        ((status == 422) & np.frombuffer(plan.expect_422, np.uint8).astype(bool)).sum()
    )
    by_item = {
        item: {
            name: int(((outcome == code) & (items == number)).sum())
            for code, name in enumerate(OUTCOMES)
            if code
        }
        for number, item in enumerate(ITEMS)
    }
    lag = np.frombuffer(result.lag_ns, dtype=np.int64)
    wait = np.frombuffer(result.wait_ns, dtype=np.int64)
    waited = wait[wait > 1_000_000]
    cpu_percent = 100.0 * result.cpu_s / max(result.elapsed_s, 1e-9)
    summary: dict[str, Any] = {
        "rate_target": result.rate,
        "throughput": round(int(answered.sum()) / result.elapsed_s, 1),
        "errors": errors,
        "latency_ms": latency_ms(latency[answered]),  # of answered requests only
        "errors_by_kind": kinds,
        "statuses": {
            str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True), strict=True)
        },
        "outcomes": outcomes,
        "outcomes_by_item": by_item,
        "mix": plan.counts(),
        "requests": result.count,
        "answered": int(answered.sum()),
        "duration_s": round(result.duration_s, 3),
        "elapsed_s": round(result.elapsed_s, 3),
        "generator_cpu_s": round(result.cpu_s, 3),
        "generator_cpu_percent": round(cpu_percent, 1),
        "send_lag_ms": _spread_ms(lag),
        "connection_wait_ms": {**_spread_ms(waited), "requests": int(waited.size)},
        "connections": {
            "limit": connections,
            "opened": result.connections_opened,
            "peak": result.connections_peak,
        },
        "url": url,
        "interrupted": result.interrupted,
    }
    summary["warnings"] = warnings(summary)
    return summary


def behind_schedule(summary: Mapping[str, Any]) -> bool:
    """Whether the generator could not keep its schedule in this run (see ``LAG_*``)."""
    lag = summary["send_lag_ms"]
    return bool(lag["p99"] > LAG_WARN_MS or lag["max"] > LAG_MAX_WARN_MS)


def warnings(summary: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if summary.get("interrupted"):
        out.append(
            f"stopped early (Ctrl-C): the figures cover the {summary['requests']} requests "
            f"due in the first {summary['duration_s']:g} s of the schedule"
        )
    lag = summary["send_lag_ms"]
    if behind_schedule(summary):
        out.append(
            f"the generator could not keep its schedule: p99 send lag {lag['p99']:.1f} ms "
            f"(max {lag['max']:.1f} ms); latencies are measured from the schedule all the same"
        )
    if summary["generator_cpu_percent"] > CPU_WARN_PERCENT:
        out.append(
            f"the generator used {summary['generator_cpu_percent']:.0f} % of a core: "
            "it competes with the server for CPU"
        )
    waited = summary["connection_wait_ms"]
    if waited["requests"] > 0.01 * max(summary["requests"], 1):
        out.append(
            f"{waited['requests']} requests waited over 1 ms for a free connection "
            f"(p99 {waited['p99']:.1f} ms): the server fell behind the arrival rate "
            f"with {summary['connections']['limit']} connections"
        )
    unsent = summary["errors_by_kind"].get("unsent", 0)
    if unsent:
        out.append(f"{unsent} requests were never sent: no connection came free before the end")
    return out


def timeline(result: RunResult) -> dict[str, list[float]]:
    """Per second of the schedule: p50/p99/max latency (ms) and answers per second."""
    latency = np.frombuffer(result.latency_ns, dtype=np.int64)
    status = np.frombuffer(result.status, dtype=np.int16)
    second = (np.arange(result.count) / result.rate).astype(np.int64)
    seconds = int(second.max()) + 1 if result.count else 0
    done_at = (np.arange(result.count) / result.rate + latency / 1e9)[status > 0]
    answered_per_s = np.bincount(done_at.astype(np.int64), minlength=seconds)[:seconds]
    failed_per_s = np.bincount(second[status <= 0], minlength=seconds)[:seconds]
    out: dict[str, list[float]] = {
        "second": [],
        "p50": [],
        "p99": [],
        "max": [],
        "answered": [],
        "unanswered": [],
    }
    for s in range(seconds):
        values = latency[(second == s) & (status > 0)]
        out["second"].append(float(s))
        out["answered"].append(float(answered_per_s[s]))
        out["unanswered"].append(float(failed_per_s[s]))
        if values.size:
            p50, p99 = np.percentile(values, [50, 99])
            out["p50"].append(float(p50) / 1e6)
            out["p99"].append(float(p99) / 1e6)
            out["max"].append(float(values.max()) / 1e6)
        else:
            for key in ("p50", "p99", "max"):
                out[key].append(float("nan"))
    return out


def write_png(result: RunResult, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter

    series = timeline(result)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5), layout="constrained")
    lat = summary["latency_ms"]
    fig.suptitle(
        f"miaopi loadtest {summary['url']}: target {summary['rate_target']:g}/s, "
        f"achieved {summary['throughput']:g}/s, errors {summary['errors']}, "
        f"p99 {lat['p99']:g} ms",
        fontsize=12,
    )
    for key, colour in (("max", "tab:red"), ("p99", "tab:orange"), ("p50", "tab:blue")):
        top.plot(series["second"], series[key], label=f"{key} latency", color=colour, lw=1.6)
    top.set_yscale("log")
    top.set_xlabel("second of the schedule")
    top.set_ylabel("latency from scheduled send (ms)")
    top.grid(True, which="both", alpha=0.3)
    rate_axis = top.twinx()
    rate_axis.plot(
        series["second"], series["answered"], color="tab:gray", lw=1, ls="--", label="answers/s"
    )
    rate_axis.axhline(summary["rate_target"], color="tab:green", lw=0.8, ls=":", label="target/s")
    if any(series["unanswered"]):
        rate_axis.plot(
            series["second"], series["unanswered"], color="black", lw=1, ls="-.",
            label="unanswered/s",
        )  # fmt: skip
    rate_axis.set_ylabel("requests per second")
    rate_axis.legend(loc="lower right", framealpha=0.8, fontsize=8)
    rate_axis.set_ylim(0, max([summary["rate_target"], *series["answered"]]) * 1.15)
    top.legend(loc="lower left", framealpha=0.8)
    top.set_title("latency of answered requests over time (by scheduled second)")

    latency = np.frombuffer(result.latency_ns, dtype=np.int64)
    values = np.sort(latency[np.frombuffer(result.status, dtype=np.int16) > 0]) / 1e6
    if values.size:
        quantile = (np.arange(values.size) + 0.5) / values.size
        bottom.plot(1 / (1 - quantile), values, color="tab:purple", lw=1.6)
    bottom.set_xscale("log")
    bottom.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    bottom.xaxis.set_major_locator(FixedLocator(ticks))
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * (1 - 1 / x):g}%"))
    for name, p in PERCENTILES.items():
        bottom.axvline(1 / (1 - p / 100), color="gray", lw=0.5, ls=":")
        bottom.annotate(
            f"{name} {lat[name]:g} ms",
            (1 / (1 - p / 100), lat[name] or 1e-3),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=9,
        )
    bottom.set_xlim(1, max(2000.0, values.size / 2))
    bottom.set_xlabel("percentile")
    bottom.set_ylabel("latency (ms)")
    bottom.grid(True, which="both", alpha=0.3)
    bottom.set_title("latency distribution")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(summary: dict[str, Any], path: Path) -> None:
    """The report at ``path``, whole or not at all (written aside, then moved there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.part")
    aside.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(aside, path)


def table(summary: dict[str, Any]) -> Table:
    t = Table(title=f"loadtest {summary['url']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    lat = summary["latency_ms"]
    lag = summary["send_lag_ms"]
    rows = [
        ("target rate", f"{summary['rate_target']:g} /s for {summary['duration_s']:g} s"),
        ("throughput", f"{summary['throughput']:g} /s ({summary['answered']} answers)"),
        ("errors", f"{summary['errors']} {summary['errors_by_kind'] or ''}"),
        ("latency ms", "  ".join(f"{k} {lat[k]:g}" for k in (*PERCENTILES, "max"))),
        ("outcomes", "  ".join(f"{k} {v}" for k, v in summary["outcomes"].items())),
        ("statuses", "  ".join(f"{k}: {v}" for k, v in summary["statuses"].items())),
        ("mix", "  ".join(f"{k} {v}" for k, v in summary["mix"].items())),
        ("send lag ms", f"p50 {lag['p50']:g}  p99 {lag['p99']:g}  max {lag['max']:g}"),
        ("generator CPU", f"{summary['generator_cpu_percent']:g} % of a core"),
        (
            "connections",
            f"peak {summary['connections']['peak']} of {summary['connections']['limit']}",
        ),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t
