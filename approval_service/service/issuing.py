"""Issuing an approved result into the registries, inside the decision's transaction.

A policy names its issuance action (``issue:`` in the policy file); each action
here turns the engine's result into registry changes through an
:class:`~data_lookups.issuance.Issuer` bound to the decision's transaction, and
returns what issuing adds to the result (a card number). The group writer's
issuer queues the changes and sends a group's at once
(:class:`~data_lookups.issuance_pipeline.PipelinedIssuer`); an officer's decision
issues at once (:class:`~data_lookups.issuance.DirectIssuer`). Registry
constraints are the last line of defence: a change that would break one raises
:class:`~approval_service.errors.IssuanceConflict`, and nothing is issued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from data_lookups.issuance import Issuer


@dataclass(frozen=True)
class IssueContext:
    issuer: Issuer
    application_id: str
    applicant_id: str
    today: date
    result: Mapping[str, Any]
    facts: Mapping[str, Any]  # the full registry bundle the decision was made on


Action = Callable[[IssueContext], dict[str, Any]]


def _valid_cards(ctx: IssueContext) -> list[Mapping[str, Any]]:
    return [c for c in ctx.facts.get("cards") or [] if c["status"] == "valid"]


def create_allowance(ctx: IssueContext) -> dict[str, Any]:
    ctx.issuer.issue_allowance(
        ctx.applicant_id,
        ctx.result["payment_start"],
        ctx.result["monthly_amount"],
        ctx.application_id,
    )
    return {}


def rent_withdrawal(ctx: IssueContext) -> dict[str, Any]:
    ctx.issuer.record_rent_withdrawal(
        ctx.applicant_id, ctx.result["amount"], ctx.today, ctx.application_id
    )
    return {}


def retirement_withdrawal(ctx: IssueContext) -> dict[str, Any]:
    ctx.issuer.close_fund_for_retirement(
        ctx.applicant_id, ctx.result["amount"], ctx.today, ctx.application_id
    )
    return {}


def _new_card(ctx: IssueContext, expires_on: date) -> str:
    return ctx.issuer.issue_card(
        ctx.applicant_id,
        ctx.result["card_type"],
        ctx.result["issued_on"],
        expires_on,
        ctx.application_id,
    )


def new_card(ctx: IssueContext) -> dict[str, Any]:
    # a card past its expiry may still be marked valid in the registry: it is superseded
    for card in _valid_cards(ctx):
        if card["expires_on"] < ctx.today:
            ctx.issuer.cancel_card(card["card_no"], "renewed", ctx.today, ctx.applicant_id)
    return {"card_no": _new_card(ctx, ctx.result["expires_on"])}


def replacement_card(ctx: IssueContext) -> dict[str, Any]:
    lost = max(
        (c for c in _valid_cards(ctx) if c["expires_on"] >= ctx.today),
        key=lambda c: c["expires_on"],
    )
    ctx.issuer.cancel_card(lost["card_no"], "lost", ctx.today, ctx.applicant_id)
    return {"card_no": _new_card(ctx, lost["expires_on"]), "replaces_card_no": lost["card_no"]}


def renewal_card(ctx: IssueContext) -> dict[str, Any]:
    cards = list(ctx.facts.get("cards") or [])
    latest = max(cards, key=lambda c: c["expires_on"]) if cards else None
    for card in _valid_cards(ctx):
        ctx.issuer.cancel_card(card["card_no"], "renewed", ctx.today, ctx.applicant_id)
    extra: dict[str, Any] = {"card_no": _new_card(ctx, ctx.result["expires_on"])}
    if latest is not None:
        extra["replaces_card_no"] = latest["card_no"]
    return extra


ACTIONS: dict[str, Action] = {
    "create_allowance": create_allowance,
    "rent_withdrawal": rent_withdrawal,
    "retirement_withdrawal": retirement_withdrawal,
    "new_card": new_card,
    "replacement_card": replacement_card,
    "renewal_card": renewal_card,
}

#: the actions that issue one new card each
ISSUES_A_CARD = frozenset({"new_card", "replacement_card", "renewal_card"})
