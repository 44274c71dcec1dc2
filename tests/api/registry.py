"""A small, hand-made registry: one person per scenario, written in the import format."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from data_lookups.id_numbers import make_id_number

TODAY = date(2026, 11, 23)


class RegistryBuilder:
    def __init__(self) -> None:
        self.files: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._seq = 100

    def person(
        self,
        birth: date,
        *,
        region: str = "341602",
        hukou: str | None = None,
        status: str = "alive",
        gender: str = "M",
        last_seen: date | None = TODAY,
        photo: bool = True,
    ) -> str:
        self._seq += 2
        id_number = make_id_number(region, birth, self._seq + (1 if gender == "M" else 0))
        self.files["population.jsonl"].append(
            {
                "id_number": id_number,
                "name": "测试",
                "gender": gender,
                "birth_date": birth.isoformat(),
                "hukou_region": hukou or region,
                "status": status,
                "death_date": "2026-01-01" if status == "deceased" else None,
                "last_seen_date": last_seen.isoformat() if last_seen else None,
            }
        )
        if photo:
            self.files["photos.jsonl"].append({"id_number": id_number, "photo_sha256": "ab" * 32})
        return id_number

    def stranger(self) -> str:
        """A valid ID number that is not in the registry."""
        self._seq += 2
        return make_id_number("341621", date(1950, 6, 1), self._seq)

    def add(self, file: str, **row: Any) -> None:
        self.files[file].append(
            {k: (v.isoformat() if isinstance(v, date) else v) for k, v in row.items()}
        )

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, rows in self.files.items():
            with (directory / name).open("w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return directory
