"""A realistic mix of applications, drawn from a registry folder and pre-built as bytes.

The folder is the output of ``miaopi data generate`` (or any registry in the import
format). Applicants are chosen per item so that the outcomes are plausible: people
aged 80 and over (and a few just under) for the elderly allowance, allowance holders
for its certification, fund-account holders for the fund items, people over 60 (and a
few just under) for a new senior card, card holders for replacement and renewal. On
top of that: valid ID numbers that are not in the registry (they are referred), a few
invalid ID numbers (the service answers 422, which the run expects) and a few exact
repeats of an earlier request with its Idempotency-Key (the service replays the first
answer).

Every request is rendered to the exact bytes sent on the wire before the run starts,
so the generator does no JSON or header work while it keeps the schedule.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from data_lookups.id_numbers import make_id_number

ITEMS = (
    "elderly-allowance",
    "elderly-allowance-certification",
    "housing-fund-rent-withdrawal",
    "housing-fund-retirement-withdrawal",
    "senior-card-new",
    "senior-card-replacement",
    "senior-card-renewal",
)
#: share of each item among ordinary applications (same order as ITEMS)
ITEM_WEIGHTS = (0.15, 0.10, 0.25, 0.10, 0.20, 0.05, 0.15)
#: request kinds
NORMAL, NOT_FOUND, INVALID, REPEAT = 0, 1, 2, 3
KINDS = ("normal", "not_found", "invalid_id", "repeat")
#: shares of the special kinds; the rest are ordinary applications
NOT_FOUND_SHARE = 0.03
INVALID_SHARE = 0.01
REPEAT_SHARE = 0.02
ADDRESSES = (
    "亳州市谯城区人民中路1号",
    "亳州市涡阳县星园路18号",
    "亳州市蒙城县庄子大道66号",
    "亳州市利辛县人民路9号",
)
CITY_REGIONS = ("341602", "341621", "341622", "341623")


@dataclass
class Pools:
    """Sampled applicants per role (each at most ``cap``, reservoir-sampled)."""

    elderly: list[str] = field(default_factory=list)  # aged 80+
    near_elderly: list[str] = field(default_factory=list)  # 70-79
    seniors: list[str] = field(default_factory=list)  # 60+
    near_seniors: list[str] = field(default_factory=list)  # 55-59
    anyone: list[str] = field(default_factory=list)
    allowance_holders: list[str] = field(default_factory=list)
    fund_holders: list[str] = field(default_factory=list)
    fund_older: list[str] = field(default_factory=list)  # fund holders aged 50+
    card_holders: list[str] = field(default_factory=list)  # with a valid card

    def sizes(self) -> dict[str, int]:
        return {name: len(values) for name, values in vars(self).items()}


@dataclass
class Plan:
    """Every request of a run, in schedule order, as wire bytes, with what to expect."""

    requests: list[bytes]
    expect_422: bytearray  # 1 where the service must answer 422 (invalid ID number)
    kinds: bytearray  # NORMAL / NOT_FOUND / INVALID / REPEAT
    items: bytearray  # index into ITEMS

    def __len__(self) -> int:
        return len(self.requests)

    def counts(self) -> dict[str, int]:
        return {name: self.kinds.count(code) for code, name in enumerate(KINDS)}

    def first(self, count: int) -> Plan:
        """The plan's first ``count`` requests (what came due in a run stopped early)."""
        if count >= len(self):
            return self
        return Plan(
            self.requests[:count],
            self.expect_422[:count],
            self.kinds[:count],
            self.items[:count],
        )


def _age(id_number: str, today: date) -> int:
    """Age in whole years from the birth date inside the ID number (-1 if unreadable)."""
    try:
        year, month, day = int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14])
    except ValueError:
        return -1
    return today.year - year - ((today.month, today.day) < (month, day))


def _lines(path: Path) -> Iterator[dict[str, object]]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                row = orjson.loads(line)
                if isinstance(row, dict):
                    yield row


class _Reservoir:
    def __init__(self, rng: random.Random, cap: int) -> None:
        self.rng, self.cap = rng, cap
        self.seen = 0
        self.values: list[str] = []

    def add(self, value: str) -> None:
        self.seen += 1
        if len(self.values) < self.cap:
            self.values.append(value)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.cap:
                self.values[slot] = value


def load_pools(directory: Path, *, today: date, seed: int = 0, cap: int = 50_000) -> Pools:
    """Read a registry folder once and sample applicants for every role."""
    if not (directory / "population.jsonl").exists():
        raise FileNotFoundError(f"{directory}: no population.jsonl (use `miaopi data generate`)")
    rng = random.Random(seed)
    res = {name: _Reservoir(rng, cap) for name in vars(Pools())}
    for row in _lines(directory / "population.jsonl"):
        pid = str(row["id_number"])
        age = _age(pid, today)
        res["anyone"].add(pid)
        if age >= 80:
            res["elderly"].add(pid)
        elif age >= 70:
            res["near_elderly"].add(pid)
        if age >= 60:
            res["seniors"].add(pid)
        elif age >= 55:
            res["near_seniors"].add(pid)
    for row in _lines(directory / "allowances.jsonl"):
        res["allowance_holders"].add(str(row["id_number"]))
    for row in _lines(directory / "fund_accounts.jsonl"):
        pid = str(row["id_number"])
        res["fund_holders"].add(pid)
        if _age(pid, today) >= 50:
            res["fund_older"].add(pid)
    for row in _lines(directory / "senior_cards.jsonl"):
        if row.get("status") == "valid":
            res["card_holders"].add(str(row["id_number"]))
    return Pools(**{name: r.values for name, r in res.items()})


class _Builder:
    def __init__(self, pools: Pools, rng: random.Random, today: date) -> None:
        self.pools, self.rng, self.today = pools, rng, today
        # made-up but valid numbers stand in for any empty pool
        self.fallback = [self.not_found() for _ in range(64)]

    def pick(self, *choices: tuple[float, list[str]]) -> str:
        """From the first pool whose cumulative share covers a random draw (skipping empties)."""
        r = self.rng.random()
        for share, pool in choices:
            if r < share and pool:
                return self.rng.choice(pool)
            r -= share
        for _, pool in choices:
            if pool:
                return self.rng.choice(pool)
        return self.rng.choice(self.fallback)

    def applicant(self, item: str) -> str:
        p = self.pools
        if item == "elderly-allowance":
            return self.pick((0.8, p.elderly), (0.2, p.near_elderly))
        if item == "elderly-allowance-certification":
            return self.pick((0.9, p.allowance_holders), (0.1, p.elderly))
        if item == "housing-fund-rent-withdrawal":
            return self.pick((0.95, p.fund_holders), (0.05, p.anyone))
        if item == "housing-fund-retirement-withdrawal":
            return self.pick((0.7, p.fund_older), (0.3, p.fund_holders))
        if item == "senior-card-new":
            return self.pick((0.85, p.seniors), (0.15, p.near_seniors))
        return self.pick((0.9, p.card_holders), (0.1, p.seniors))  # replacement, renewal

    def form(self, item: str) -> dict[str, str] | None:
        wants = {"senior-card-new": 1.0, "senior-card-replacement": 0.9, "senior-card-renewal": 0.5}
        if self.rng.random() < wants.get(item, 0.0):
            return {"mailing_address": self.rng.choice(ADDRESSES)}
        return None

    def not_found(self) -> str:
        """A valid ID number that no generated registry holds (sequence 900-999)."""
        born = self.today - timedelta(days=self.rng.randrange(18 * 365, 95 * 365))
        return make_id_number(self.rng.choice(CITY_REGIONS), born, self.rng.randrange(900, 1000))

    def invalid(self) -> str:
        good = self.not_found()
        flip = {"0": "1", "X": "0"}.get(good[-1], "X" if good[-1] == "9" else "0")
        return self.rng.choice(
            (
                good[:-1] + flip,  # wrong check character
                good[:-1],  # 17 characters
                good[:10] + "1332" + good[14:],  # 32 December
                good[:6] + "19A0" + good[10:],  # a letter in the birth date
            )
        )


def render(
    *, host: str, key: str, path: str, body: dict[str, object], idempotency_key: str | None
) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    )
    if idempotency_key is not None:
        head += f"Idempotency-Key: {idempotency_key}\r\n"
    return (head + "\r\n").encode() + payload


def build_plan(
    pools: Pools,
    count: int,
    *,
    host: str,
    key: str,
    base_path: str = "",
    run_id: str,
    seed: int = 0,
    today: date,
    precheck_share: float = 0.0,
) -> Plan:
    """``count`` requests in schedule order.

    Applicants depend only on ``pools``, ``seed`` and ``count``: the precheck choice
    draws from its own generator, so a precheck-only warm-up with the same seed
    touches the same applicants as the run that follows it.
    """
    rng = random.Random(seed)
    endpoint_rng = random.Random(seed + 1)
    build = _Builder(pools, rng, today)
    plan = Plan([], bytearray(), bytearray(), bytearray())
    applications, prechecks = f"{base_path}/v1/applications", f"{base_path}/v1/precheck"
    for i in range(count):
        r = rng.random()
        if i and r < REPEAT_SHARE:
            j = i - 1 - rng.randrange(min(i, 500))
            plan.requests.append(plan.requests[j])
            plan.expect_422.append(plan.expect_422[j])
            plan.items.append(plan.items[j])
            plan.kinds.append(REPEAT)
            continue
        item_no = rng.choices(range(len(ITEMS)), ITEM_WEIGHTS)[0]
        item = ITEMS[item_no]
        if r < REPEAT_SHARE + INVALID_SHARE:
            kind, applicant = INVALID, build.invalid()
        elif r < REPEAT_SHARE + INVALID_SHARE + NOT_FOUND_SHARE:
            kind, applicant = NOT_FOUND, build.not_found()
        else:
            kind, applicant = NORMAL, build.applicant(item)
        body: dict[str, object] = {"item": item, "applicant_id": applicant}
        form = build.form(item)
        if form is not None:
            body["form"] = form
        precheck = endpoint_rng.random() < precheck_share
        plan.requests.append(
            render(
                host=host,
                key=key,
                path=prechecks if precheck else applications,
                body=body,
                idempotency_key=None if precheck else f"lt-{run_id}-{i}",
            )
        )
        plan.expect_422.append(kind == INVALID)
        plan.items.append(item_no)
        plan.kinds.append(kind)
    return plan
