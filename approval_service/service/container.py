"""Everything a running service needs, built once at start-up from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from approval_service.authoring.lint import check_catalogue
from approval_service.engine.backends import PolicySet
from approval_service.errors import Location, PolicyDefinitionError, PolicyError, PolicyFolderError
from approval_service.policy.model import Policy
from approval_service.service import group_store
from approval_service.service.clock import Clock
from approval_service.service.documents import dumps
from approval_service.service.group_commit import GroupCommitter
from approval_service.service.group_recording import GroupRecorder
from approval_service.service.issuing import ACTIONS
from approval_service.service.loop_writer import AtOnceOnLoop
from approval_service.service.metrics import CountingCache, Metrics
from approval_service.service.records import remember_policy
from approval_service.service.workdays import WorkCalendar
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, is_postgres, make_engine, write_transaction
from data_lookups.fact_cache import CachedFactSource, FactCache, make_fact_cache
from data_lookups.facts import SqlFactSource


def check_against_registries(policies: dict[str, Policy]) -> None:
    """Every declared fact exists in the registries' catalogue as declared; every action exists.

    The same check as ``miaopi rules lint`` (file, line and suggestion for each mismatch).
    """
    errors: list[PolicyError] = []
    for policy in policies.values():
        errors += [
            PolicyDefinitionError(f.message, f.location, f.suggestion)
            for f in check_catalogue(policy)
        ]
        if policy.issue is not None and policy.issue not in ACTIONS:
            errors.append(
                PolicyDefinitionError(
                    f"issue `{policy.issue}` is not an issuance action",
                    Location(policy.source_file),
                    f"use one of {', '.join(sorted(ACTIONS))}",
                )
            )
    if errors:
        raise PolicyFolderError(errors)


def _pool_sizes(settings: Settings) -> tuple[int, int]:
    """(main pool, reads pool) on PostgreSQL: ``db_pool_size`` is what the process keeps
    open in all, so the reads pool (see :class:`SqlFactSource`) takes half of it (0: no
    reads pool of its own, with a budget of one connection)."""
    reads = settings.db_pool_size // 2
    return settings.db_pool_size - reads, reads


def _pool_options(settings: Settings, size: int) -> dict[str, Any]:
    """orjson for JSON columns; on PostgreSQL a pool of ``size`` (and half again in bursts)."""
    options: dict[str, Any] = {"json_serializer": dumps}
    if settings.database_url.startswith("postgres"):
        options.update(pool_size=size, max_overflow=size // 2)
    return options


@dataclass
class Container:
    settings: Settings
    engine: Engine
    policies: PolicySet
    sql_facts: SqlFactSource
    facts: CachedFactSource
    cache: FactCache
    clock: Clock
    calendar: WorkCalendar
    metrics: Metrics = field(default_factory=Metrics)
    recorder: GroupRecorder = field(init=False)
    committer: GroupCommitter[Any, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.recorder = GroupRecorder(self)
        self.committer = GroupCommitter(
            self.engine,
            self.recorder.record_group,
            after_commit=self.recorder.after_commit,
            after_commit_on_loop=self.recorder.after_commit_on_loop,
            linger=self.settings.group_linger_ms / 1000,
            observe_group=self.metrics.observe_group,
            on_connect=group_store.writer_session,
            at_once_on_loop=(
                AtOnceOnLoop(self.recorder.plan_at_once_on_loop)
                if self.settings.loop_writer and is_postgres(self.engine)
                else None
            ),
        )

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Container:
        deployment = {
            "city_prefix": settings.city_prefix,
            "province_prefix": settings.province_prefix,
        }
        policies = PolicySet.load(Path(settings.rules_dir), deployment)
        check_against_registries(policies.policies)
        main_size, reads_size = _pool_sizes(settings)
        engine = make_engine(settings.database_url, **_pool_options(settings, main_size))
        ensure_schema(engine)
        reads = None
        if is_postgres(engine) and reads_size:  # these reads retry by themselves: no ping
            options = _pool_options(settings, reads_size)
            reads = make_engine(settings.database_url, **options, pool_pre_ping=False)
        sql_facts = SqlFactSource(engine, reads)
        metrics = Metrics()
        cache: FactCache = CountingCache(
            make_fact_cache(settings.redis_url, prefix=settings.redis_prefix), metrics
        )  # type: ignore[assignment]
        container = cls(
            settings=settings,
            engine=engine,
            policies=policies,
            sql_facts=sql_facts,
            facts=CachedFactSource(sql_facts, cache),
            cache=cache,
            metrics=metrics,
            clock=clock or Clock.of(settings.timezone),
            calendar=WorkCalendar.from_folder(settings.holidays_dir),
        )
        remember_policies(container)
        return container

    async def aclose_loop_clients(self) -> None:
        """Close what the current event loop opened: the writer's connection on this loop
        (its group in flight done first), the registry connection that reads misses (a
        miss it finishes still stores its entry), then the cache's asyncio Redis client,
        once the writer's hooks on this loop (which drop cache entries) are done."""
        try:
            await self.committer.aclose_loop()  # its group's hook may start meanwhile
            await self.committer.drain_loop_hooks()
            await self.facts.aclose()
        finally:
            closer = getattr(self.cache, "aclose", None)
            if closer is not None:
                await closer()

    def close(self) -> None:
        self.committer.close()
        closer = getattr(self.cache, "close", None)
        if closer is not None:
            closer()
        self.sql_facts.close()
        self.engine.dispose()


def remember_policies(container: Container) -> None:
    """Keep the text of every loaded policy version, so old decisions can be replayed."""
    now = container.clock.now()
    with write_transaction(container.engine) as conn:
        for policy in container.policies.policies.values():
            remember_policy(
                conn, policy.sha256, policy.item, policy.version, policy.source_text, now
            )
