"""The one settings object, read from ``MIAOPI_*`` environment variables.

Built at start-up by whoever starts the process (CLI command, ASGI factory),
never at import time, so tests can build their own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIAOPI_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_VAR_DIR / 'miaopi.sqlite3'}",
        description="Database URL: postgresql://user@host/db or sqlite:///path",
    )
    db_pool_size: int = Field(
        default=40,
        ge=1,
        le=500,
        description="database connections kept open per process (on PostgreSQL, half of "
        "them for the registry reads of prechecks and cache misses)",
    )
    group_linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=50,
        description="how long a small group of a busy group-commit writer waits for more "
        "applications before it is written (0: never); a lone request never waits, but "
        "from about 1,000 applications/s up a request may wait up to this long",
    )
    loop_writer: bool = Field(
        default=True,
        description="PostgreSQL: small groups of applications from the event loop are "
        "written at once on the loop itself, with a connection of its own (false: every "
        "group goes through the writer thread)",
    )
    gil_switch_ms: float = Field(
        default=5.0,
        gt=0,
        le=100,
        description="how long a serving worker's group writer may wait for the GIL once "
        "PostgreSQL has answered (sys.setswitchinterval; 5 is Python's own default)",
    )
    redis_url: str | None = Field(default=None, description="Redis for the fact cache")
    redis_prefix: str = Field(default="miaopi:", description="prefix of every Redis key")
    api_keys: str = Field(default="", description="comma-separated channel:key pairs")
    officer_channels: str = Field(
        default="",
        description="channels allowed to review, see statistics and read every application; "
        "empty: every channel may",
    )
    rules_dir: Path = Field(default=Path("rules"), description="folder of policy files")
    city_prefix: str = Field(default="3416", description="hukou region prefix of the city")
    province_prefix: str = Field(default="34", description="hukou region prefix of the province")
    timezone: str = Field(default="Asia/Shanghai", description="zone of the business date")
    notify_webhook: str | None = Field(default=None, description="SMS webhook for miaopi notify")
    holidays_dir: Path | None = Field(
        default=None, description="folder of published holiday schedules (YYYY.json)"
    )

    @field_validator("city_prefix", "province_prefix")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not value.isdigit() or not 1 <= len(value) <= 6:
            raise ValueError("must be 1 to 6 digits, like 3416")
        return value

    def officers(self) -> frozenset[str] | None:
        """The officer channels, or None when every channel may act as one."""
        names = frozenset(n.strip() for n in self.officer_channels.split(",") if n.strip())
        return names or None

    def channel_keys(self) -> dict[str, str]:
        """``{key: channel}`` from ``MIAOPI_API_KEYS``; raises ValueError on a bad pair."""
        keys: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in self.api_keys.split(","))):
            channel, sep, key = pair.partition(":")
            if not sep or not channel or not key:
                raise ValueError(
                    f"MIAOPI_API_KEYS: {pair!r} is not channel:key (example: portal:s3cret)"
                )
            keys[key] = channel
        return keys
