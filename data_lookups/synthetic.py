"""``miaopi data generate``: a synthetic but realistic registry of a prefecture-level city.

Modelled on 亳州 (Bozhou, Anhui): residents of 谯城区 341602, 涡阳县 341621, 蒙城县
341622 and 利辛县 341623, with an age pyramid (about 20 % aged 60+, 3 % aged 80+,
a few centenarians), deaths, hukou moved out (to 合肥 340102 … or out of the
province, 320102 …) and in (ID numbers first issued elsewhere), low-income
households, married couples, provident-fund accounts in every status, properties
in and out of the city, social-security retirements, senior cards (valid,
expired, lost, renewed; a few people with two recent losses), missing photos
(about 3 %), allowances for people over 80, birthdays on 29 February.

Determinism: the files depend only on ``people``, ``seed`` and ``as_of`` (the
business "today" the registry is generated for). The same three give the same
files byte for byte; the command's default ``as_of`` is today in Asia/Shanghai,
so pass ``--as-of`` to reproduce a registry on another day.

Speed: one ``random.Random``, plain tuples and f-strings, buffered writes; a
million residents take well under a minute.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path
from typing import IO

from data_lookups.id_numbers import check_char

CITY_REGIONS = ("341602", "341621", "341622", "341623")
CITY_WEIGHTS = (0.30, 0.25, 0.23, 0.22)
PROVINCE_REGIONS = ("340102", "340104", "340202", "341202", "341204", "341502")
OUTSIDE_REGIONS = ("320102", "410102", "330102", "310101", "110101", "440305")
FILES = (
    "population",
    "low_income",
    "allowances",
    "senior_cards",
    "photos",
    "fund_accounts",
    "properties",
    "marriages",
    "social_security",
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史"  # noqa: E501
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建国玉梅志红文俊德秀珍福海凤林春燕云飞鹏辉荣学成兵彬婷雪琴晶慧颖浩宇子涵思雨欣怡佳"  # noqa: E501
# monthly allowance by band in force since 2025-01-01 (handbook), and the low-income supplement
ALLOWANCE = {80: 60, 90: 120, 100: 600}
LOW_INCOME_SUPPLEMENT = 30


def _age_weights() -> list[float]:
    """Share of each age 0..105: about 20 % at 60+, 3 % at 80+, a few at 100+."""
    young = [1.0 + 0.3 * ((a % 30) / 30) for a in range(60)]  # uneven cohorts
    old = [1.2 - 0.035 * (a - 60) for a in range(60, 80)]
    very_old = [0.9 * 0.83 ** (a - 80) for a in range(80, 100)]
    centenarian = [0.002] * 6
    parts = ((young, 0.77), (old, 0.2 - 0.03), (very_old, 0.03 - 0.0001), (centenarian, 0.0001))
    weights: list[float] = []
    for values, share in parts:
        total = sum(values)
        weights.extend(v / total * share for v in values)
    return weights


@dataclass(frozen=True)
class Summary:
    people: int
    rows: dict[str, int]


def _q(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a common year
        return day.replace(year=day.year + years, day=28)


class _Writer:
    """One buffered output file per registry, and a row counter."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._handles: dict[str, IO[str]] = {
            name: (directory / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n")
            for name in FILES
        }
        self.buffers: dict[str, list[str]] = {name: [] for name in FILES}
        self.rows = dict.fromkeys(FILES, 0)

    def flush(self) -> None:
        for name, lines in self.buffers.items():
            if lines:
                self._handles[name].write("\n".join(lines) + "\n")
                self.rows[name] += len(lines)
                lines.clear()

    def close(self) -> None:
        self.flush()
        for handle in self._handles.values():
            handle.close()


def generate_registry(directory: Path, people: int, *, seed: int = 0, as_of: date) -> Summary:
    """Write the nine registry files for ``people`` residents into ``directory``."""
    if people < 0:
        raise ValueError("people must be zero or more")
    rng = random.Random(seed)
    out = _Writer(directory)
    gen = _Generator(rng, out.buffers, as_of)
    try:
        for i in range(people):
            gen.person(i)
            if i % 50_000 == 49_999:
                out.flush()
        gen.finish()
    finally:
        out.close()
    return Summary(people=people, rows=dict(out.rows))


class _Generator:
    def __init__(self, rng: random.Random, buffers: dict[str, list[str]], as_of: date) -> None:
        self.rng = rng
        self.b = buffers
        self.as_of = as_of
        self.today = as_of.toordinal()
        self.cum_ages = list(accumulate(_age_weights()))
        self.city_cum = list(accumulate(CITY_WEIGHTS))
        self.used: dict[tuple[str, int, int], int] = {}
        self.card_seq = 1_000_000_000
        self.property_seq = 0
        # people waiting for a spouse, by (is_male, age decade): couples are of an age
        self.waiting: dict[tuple[int, int], list[str]] = {}

    # -- identity -------------------------------------------------------------------

    def _id(self, region: str, born: date, male: int) -> tuple[str, date]:
        while True:
            key = (region, born.toordinal(), male)
            k = self.used.get(key, 0)
            seq = 2 * k + 1 if male else 2 * k + 2
            if seq <= 999:
                self.used[key] = k + 1
                head = f"{region}{born:%Y%m%d}{seq:03d}"
                return head + check_char(head), born
            born += timedelta(days=1)

    def _city(self) -> str:
        return CITY_REGIONS[bisect(self.city_cum, self.rng.random() * self.city_cum[-1])]

    def _regions(self) -> tuple[str, str]:
        """(ID address code, hukou region): mostly local; some moved out or in."""
        r = self.rng.random()
        if r < 0.05:  # hukou moved in: number first issued elsewhere
            pool = PROVINCE_REGIONS if r < 0.03 else OUTSIDE_REGIONS
            return self.rng.choice(pool), self._city()
        if r < 0.09:  # hukou moved out, within the province or beyond
            pool = PROVINCE_REGIONS if r < 0.07 else OUTSIDE_REGIONS
            return self._city(), self.rng.choice(pool)
        city = self._city()
        return city, city

    def person(self, i: int) -> None:
        rng = self.rng
        age = bisect(self.cum_ages, rng.random() * self.cum_ages[-1])
        if i % 4999 == 17:
            age = 100 + i % 5
        age = min(age, 105)
        born = date.fromordinal(self.today - int(age * 365.2425) - rng.randrange(365))
        if i % 997 == 5:  # a leap-day birthday
            year = born.year - born.year % 4
            year = year if year % 100 or year % 400 == 0 else year - 4
            born = date(year if date(year, 2, 29) <= self.as_of else year - 4, 2, 29)
        male = 1 if rng.random() < (0.4 if age >= 80 else 0.5) else 0
        id_region, hukou = self._regions()
        id_number, born = self._id(id_region, born, male)
        name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2, 2))))
        death_p = 0.002 if age < 60 else 0.02 if age < 80 else 0.08 if age < 100 else 0.2
        dead = rng.random() < death_p
        death = None
        if dead:
            death_ord = max(born.toordinal(), self.today - rng.randrange(1, 5 * 365))
            death = date.fromordinal(death_ord)
        seen = self._last_seen(born, death)
        self.b["population"].append(
            f'{{"id_number": "{id_number}", "name": "{name}", "gender": "{"M" if male else "F"}",'
            f' "birth_date": "{born.isoformat()}", "hukou_region": "{hukou}",'
            f' "status": "{"deceased" if dead else "alive"}", "death_date": '
            f"{_q(death.isoformat() if death else None)},"
            f' "last_seen_date": {_q(seen)}}}'
        )
        local = hukou.startswith("3416")
        low = self._low_income(id_number, age)
        if age >= 80 and local:
            self._allowance(id_number, born, age, dead, low)
        if age >= 60 and hukou.startswith("34"):
            self._cards(id_number, born)
        if age >= 16 and not dead and rng.random() >= 0.03:
            digest = hashlib.sha256(id_number.encode()).hexdigest()
            self.b["photos"].append(f'{{"id_number": "{id_number}", "photo_sha256": "{digest}"}}')
        if 18 <= age <= 75:
            self._fund(i, id_number, born, age, male)
        if age >= 23:
            self._properties(id_number, local)
            if not dead and age <= 90 and rng.random() < 0.6:
                self._marry(id_number, male, age)
        self._social_security(id_number, born, age, male)

    def _last_seen(self, born: date, death: date | None) -> str | None:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return None
        end = death.toordinal() if death else self.today
        back = (
            rng.randrange(90)
            if r < 0.87
            else rng.randrange(90, 366)
            if r < 0.95
            else (rng.randrange(400, 1500))
        )
        return date.fromordinal(max(born.toordinal(), end - back)).isoformat()

    # -- other registries ---------------------------------------------------------

    def _low_income(self, id_number: str, age: int) -> bool:
        rng = self.rng
        if rng.random() >= (0.08 if age >= 60 else 0.03):
            return False
        category = "tekun" if rng.random() < 0.15 else "dibao"
        since = date.fromordinal(self.today - rng.randrange(30, 3650)).isoformat()
        self.b["low_income"].append(
            f'{{"id_number": "{id_number}", "category": "{category}", "since": "{since}"}}'
        )
        return True

    def _allowance(self, id_number: str, born: date, age: int, dead: bool, low: bool) -> None:
        rng = self.rng
        if rng.random() >= (0.5 if dead else 0.7):
            return
        band = 100 if age >= 100 else 90 if age >= 90 else 80
        amount = ALLOWANCE[band] + (LOW_INCOME_SUPPLEMENT if low else 0)
        eightieth = _add_years(born, 80)
        start = date(eightieth.year + eightieth.month // 12, eightieth.month % 12 + 1, 1)
        status = "stopped" if dead or rng.random() < 0.03 else "active"
        self.b["allowances"].append(
            f'{{"id_number": "{id_number}", "status": "{status}", "start_date": '
            f'"{start.isoformat()}", "monthly_amount": "{amount}.00"}}'
        )

    def _card(
        self,
        id_number: str,
        born: date,
        status: str,
        issued: date,
        expires: date,
        reason: str | None = None,
        cancelled: date | None = None,
    ) -> None:
        self.card_seq += 1
        age = issued.year - born.year - ((issued.month, issued.day) < (born.month, born.day))
        kind = "A" if age < 70 else "B"  # by age on the day of issue
        self.b["senior_cards"].append(
            f'{{"card_no": "AH3416{self.card_seq:010d}", "id_number": "{id_number}",'
            f' "card_type": "{kind}", "status": "{status}", "issued_on": "{issued.isoformat()}",'
            f' "expires_on": "{expires.isoformat()}", "cancel_reason": {_q(reason)},'
            f' "cancelled_on": {_q(cancelled.isoformat() if cancelled else None)}}}'
        )

    def _cards(self, id_number: str, born: date) -> None:
        rng = self.rng
        if rng.random() >= 0.5:
            return
        sixtieth = _add_years(born, 60).toordinal()
        low = min(max(sixtieth, self.today - 12 * 365), self.today - 1)
        first = date.fromordinal(rng.randrange(low, self.today))
        expires = _add_years(first, 5)
        due = max(first.toordinal() + 30, expires.toordinal() - 90)
        r = rng.random()
        if r < 0.6 and due < self.today:  # renewed when it fell due (many never renew)
            renewed = date.fromordinal(rng.randrange(due, self.today))
            self._card(id_number, born, "cancelled", first, expires, "renewed", renewed)
            first, expires = renewed, _add_years(renewed, 5)
        elif 0.6 <= r < 0.65 and min(expires.toordinal(), self.today) - first.toordinal() > 60:
            # lost and replaced by a card with the same expiry
            top = min(expires.toordinal(), self.today) - 30
            lost = date.fromordinal(rng.randrange(max(first.toordinal() + 1, top - 330), top))
            self._card(id_number, born, "cancelled", first, expires, "lost", lost)
            if rng.random() < 0.05:  # two losses within a month
                again = lost + timedelta(days=rng.randrange(1, 29))
                self._card(id_number, born, "cancelled", lost, expires, "lost", again)
                lost = again
            first = lost
        # the card registry is not told of deaths: a deceased holder's card stays valid
        self._card(id_number, born, "valid", first, expires)

    def _fund(self, i: int, id_number: str, born: date, age: int, male: int) -> None:
        rng = self.rng
        if rng.random() >= 0.35:
            return
        r = rng.random()
        status = (
            "normal" if r < 0.8 else "sealed" if r < 0.92 else "frozen" if r < 0.94 else ("closed")
        )
        if age >= 63 and rng.random() < 0.6:
            status = "closed"
        cents = 0 if status == "closed" or rng.random() < 0.03 else rng.randrange(1, 20_000_000)
        months = rng.randrange(0, min(360, (age - 17) * 12)) if status == "normal" else 0
        loan = "true" if rng.random() < 0.15 and status != "closed" else "false"
        withdrawn = None
        if status == "normal" and rng.random() < 0.2:
            withdrawn = date.fromordinal(self.today - rng.randrange(1, 730)).isoformat()
        category = "male60" if male else ("female50" if rng.random() < 0.3 else "female55")
        self.b["fund_accounts"].append(
            f'{{"id_number": "{id_number}", "account_no": "GJJ{341600000000 + i}",'
            f' "status": "{status}", "balance": "{_money(cents)}", "continuous_months": {months},'
            f' "has_outstanding_loan": {loan}, "last_rent_withdrawal_date": {_q(withdrawn)},'
            f' "retirement_category": "{category}"}}'
        )

    def _properties(self, id_number: str, local: bool) -> None:
        rng = self.rng
        r = rng.random()
        count = 0 if r < 0.55 else 1 if r < 0.92 else 2
        for _ in range(count):
            self.property_seq += 1
            in_city = rng.random() < (0.85 if local else 0.2)
            region = self._city() if in_city else rng.choice(PROVINCE_REGIONS + OUTSIDE_REGIONS)
            self.b["properties"].append(
                f'{{"property_id": "BDC{region}{self.property_seq:09d}",'
                f' "id_number": "{id_number}", "region": "{region}"}}'
            )

    def _marry(self, id_number: str, male: int, age: int) -> None:
        partners = self.waiting.setdefault((1 - male, age // 10), [])
        if partners:
            spouse = partners.pop()
            self.b["marriages"].append(
                f'{{"id_number": "{id_number}", "spouse_id_number": "{spouse}"}}'
            )
            self.b["marriages"].append(
                f'{{"id_number": "{spouse}", "spouse_id_number": "{id_number}"}}'
            )
        else:
            self.waiting.setdefault((male, age // 10), []).append(id_number)

    def _social_security(self, id_number: str, born: date, age: int, male: int) -> None:
        rng = self.rng
        retire_age = 60 if male else (55 if rng.random() < 0.7 else 50)
        if age >= retire_age and rng.random() < 0.6:
            retired = _add_years(born, retire_age).isoformat()
            self.b["social_security"].append(
                f'{{"id_number": "{id_number}", "retired_on": "{retired}"}}'
            )
        elif 18 <= age < retire_age and rng.random() < 0.1:
            self.b["social_security"].append(f'{{"id_number": "{id_number}", "retired_on": null}}')

    def finish(self) -> None:
        """Nothing pending: people still waiting for a spouse stay unmarried."""
