"""Figures for the supervision platform, per item and period.

For each item and day (or month): applications, the share decided
automatically (not referred), the approval rate (final decisions, after
review), median and p99 decision time, referrals, and overdue referrals (open
past their deadline, or reviewed after it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date
from typing import Any

from approval_service.errors import RequestError
from approval_service.service import records
from approval_service.service.container import Container
from data_lookups.database import read_connection

MAX_DAYS = 366


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return round(ordered[rank - 1], 3)


def statistics(container: Container, start: date, end: date, period: str = "day") -> dict[str, Any]:
    if period not in ("day", "month"):
        raise RequestError("period must be day or month", field="period")
    if end < start:
        raise RequestError("`to` is before `from`", field="to")
    if (end - start).days >= MAX_DAYS:
        raise RequestError(f"ask for at most {MAX_DAYS} days at a time", field="to")
    today = container.clock.today()
    with read_connection(container.engine) as conn:
        rows = records.applications_between(conn, start, end)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        day: date = row["business_date"]
        key = day.isoformat() if period == "day" else day.strftime("%Y-%m")
        groups[(row["item"], key)].append(row)
    out = []
    for (item, key), group in sorted(groups.items()):
        total = len(group)
        referred = [r for r in group if r["review_state"] is not None]
        overdue = sum(
            1
            for r in referred
            if (r["review_state"] == "open" and today > r["deadline"])
            or (r["reviewed_at"] is not None and r["reviewed_at"].date() > r["deadline"])
        )
        times = [float(r["timings"].get("total_ms", 0.0)) for r in group]
        out.append(
            {
                "item": item,
                "period": key,
                "applications": total,
                "auto_decided_share": round((total - len(referred)) / total, 4),
                "approval_rate": round(sum(r["decision"] == "approved" for r in group) / total, 4),
                "decision_ms": {"median": _percentile(times, 0.5), "p99": _percentile(times, 0.99)},
                "referrals": len(referred),
                "open_referrals": sum(r["review_state"] == "open" for r in referred),
                "overdue_referrals": overdue,
            }
        )
    return {"from": start.isoformat(), "to": end.isoformat(), "period": period, "stats": out}
