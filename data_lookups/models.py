"""The registry store: one SQLAlchemy ``Base`` whose metadata Alembic migrates.

Imported registries and what miaopi itself issues live in the same tables
(``source`` = ``import`` / ``miaopi``), so that facts never depend on who created
a record. Constraints make duplicates impossible rather than unlikely:

- at most one ``active`` allowance and at most one ``valid`` card per person
  (partial unique indexes, on PostgreSQL and SQLite alike);
- ``card_no`` is the primary key of ``senior_cards``;
- imported allowances are upserted by ``id_number`` (one imported row each).

``fact_versions`` and ``registry_state`` stamp the registry state of a person:
every change to a person's rows bumps their version in the same transaction,
and every import bumps the global epoch. The fact cache keys entries by that
stamp (see :mod:`data_lookups.fact_cache`).

Other packages add their own tables to the same ``Base`` (and a further Alembic
revision in ``data_lookups/migrations/versions``), keeping one linear history.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(14, 2, asdecimal=True)
IdNumber = String(18)
Region = String(6)


class Base(DeclarativeBase):
    """Declarative base of every miaopi table (registries and service tables)."""

    metadata = MetaData(naming_convention=NAMING)


class Person(Base):
    """人口库 population registry."""

    __tablename__ = "population"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    gender: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[date] = mapped_column(Date)
    hukou_region: Mapped[str] = mapped_column(Region)
    status: Mapped[str] = mapped_column(String(10))
    death_date: Mapped[date | None] = mapped_column(Date)
    last_seen_date: Mapped[date | None] = mapped_column(Date)
    __table_args__ = (
        CheckConstraint("gender IN ('M', 'F')", name="gender"),
        CheckConstraint("status IN ('alive', 'deceased')", name="status"),
    )


class LowIncome(Base):
    """低保/特困 low-income registry."""

    __tablename__ = "low_income"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    category: Mapped[str] = mapped_column(String(10))
    since: Mapped[date] = mapped_column(Date)
    __table_args__ = (CheckConstraint("category IN ('dibao', 'tekun')", name="category"),)


class Allowance(Base):
    """高龄津贴 allowance records, imported or issued by miaopi."""

    __tablename__ = "allowances"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id_number: Mapped[str] = mapped_column(IdNumber, index=True)
    status: Mapped[str] = mapped_column(String(10))
    start_date: Mapped[date] = mapped_column(Date)
    monthly_amount: Mapped[Decimal] = mapped_column(Money)
    source: Mapped[str] = mapped_column(String(10), server_default="import")
    application_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        CheckConstraint("status IN ('active', 'stopped')", name="status"),
        CheckConstraint("source IN ('import', 'miaopi')", name="source"),
        Index(
            "uq_allowances_one_active",
            "id_number",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index(
            "uq_allowances_imported",
            "id_number",
            unique=True,
            postgresql_where=text("source = 'import'"),
            sqlite_where=text("source = 'import'"),
        ),
    )


class SeniorCard(Base):
    """老年人优待证 senior cards, imported or issued by miaopi."""

    __tablename__ = "senior_cards"
    card_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    id_number: Mapped[str] = mapped_column(IdNumber, index=True)
    card_type: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(10))
    issued_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    cancel_reason: Mapped[str | None] = mapped_column(String(10))
    cancelled_on: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(10), server_default="import")
    application_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        CheckConstraint("status IN ('valid', 'cancelled')", name="status"),
        CheckConstraint(
            "cancel_reason IS NULL OR cancel_reason IN ('lost', 'renewed')", name="cancel_reason"
        ),
        CheckConstraint("source IN ('import', 'miaopi')", name="source"),
        Index(
            "uq_senior_cards_one_valid",
            "id_number",
            unique=True,
            postgresql_where=text("status = 'valid'"),
            sqlite_where=text("status = 'valid'"),
        ),
    )


class Photo(Base):
    """电子证照库 ID photos (only the digest is held here)."""

    __tablename__ = "photos"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    photo_sha256: Mapped[str] = mapped_column(String(64))


class FundAccount(Base):
    """住房公积金 provident-fund accounts."""

    __tablename__ = "fund_accounts"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    account_no: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(10))
    balance: Mapped[Decimal] = mapped_column(Money)
    continuous_months: Mapped[int] = mapped_column(Integer)
    has_outstanding_loan: Mapped[bool] = mapped_column(Boolean)
    last_rent_withdrawal_date: Mapped[date | None] = mapped_column(Date)
    retirement_category: Mapped[str | None] = mapped_column(String(10))
    __table_args__ = (
        CheckConstraint("status IN ('normal', 'sealed', 'frozen', 'closed')", name="status"),
        CheckConstraint("balance >= 0", name="balance"),
    )


class Property(Base):
    """不动产 property ownership."""

    __tablename__ = "properties"
    property_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id_number: Mapped[str] = mapped_column(IdNumber, index=True)
    region: Mapped[str] = mapped_column(Region)


class Marriage(Base):
    """婚姻登记 marriages: one row per spouse, each pointing at the other."""

    __tablename__ = "marriages"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    spouse_id_number: Mapped[str] = mapped_column(IdNumber, index=True)


class SocialSecurity(Base):
    """社保 retirements recorded by social security."""

    __tablename__ = "social_security"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    retired_on: Mapped[date | None] = mapped_column(Date)


class FundWithdrawal(Base):
    """Provident-fund withdrawals miaopi approved (rent or retirement)."""

    __tablename__ = "fund_withdrawals"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id_number: Mapped[str] = mapped_column(IdNumber, index=True)
    kind: Mapped[str] = mapped_column(String(12))
    amount: Mapped[Decimal] = mapped_column(Money)
    withdrawn_on: Mapped[date] = mapped_column(Date)
    application_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (CheckConstraint("kind IN ('rent', 'retirement')", name="kind"),)


class CardNumberCounter(Base):
    """Card-number counter for SQLite (PostgreSQL uses the sequence ``card_no_seq``)."""

    __tablename__ = "card_no_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger)


class FactVersion(Base):
    """Per-person version, bumped in the same transaction as any change to their rows."""

    __tablename__ = "fact_versions"
    id_number: Mapped[str] = mapped_column(IdNumber, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class RegistryState(Base):
    """One row (id = 1): ``epoch`` is bumped by every import, in the import's transaction."""

    __tablename__ = "registry_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)


#: first value handed out for miaopi-issued card numbers (imported cards use lower numbers)
CARD_NO_START = 5_000_000_000
CARD_NO_PREFIX = "AH3416"
