"""The facts the registries can provide, by name, with their types.

This is the contract between policy files and the data layer. A policy
declares the subset it reads (``facts:``); the service checks at start-up that
every declared fact and field is here with the same type.

Shapes:

- ``record?``: one record or ``None`` (absent: the registry has no row).
  A condition that reads an absent record is skipped (the handbook's rule
  that a condition whose data is absent is not evaluated).
- ``list``: a list of records, possibly empty; never ``None``.
- a scalar type: one value.

Field types are ``text``, ``int``, ``money`` (``Decimal``), ``date``
(``datetime.date``), ``bool``; a trailing ``?`` means the value may be ``None``.

Lists include the records miaopi itself issued (cards, allowances), so that a
policy never needs to know who created a record.
"""

from __future__ import annotations

from typing import Final

Shape = str
FieldTypes = dict[str, str]

#: fact name -> (shape, field types). Scalar facts use ``shape`` = the type and no fields.
FACTS: Final[dict[str, tuple[Shape, FieldTypes]]] = {
    # 人口库 population registry; absent when the ID number is not registered
    "person": (
        "record?",
        {
            "id_number": "text",
            "name": "text",
            "gender": "text",
            "birth_date": "date",
            "hukou_region": "text",
            "status": "text",
            "death_date": "date?",
            "last_seen_date": "date?",
        },
    ),
    # 低保/特困 low-income registry (at most one row per person, as a list)
    "low_income": ("list", {"category": "text", "since": "date"}),
    # 高龄津贴 allowance records, imported and issued by miaopi
    "allowances": (
        "list",
        {"status": "text", "start_date": "date", "monthly_amount": "money"},
    ),
    # 老年人优待证 senior cards, imported and issued by miaopi
    "cards": (
        "list",
        {
            "card_no": "text",
            "card_type": "text",
            "status": "text",
            "issued_on": "date",
            "expires_on": "date",
            "cancel_reason": "text?",
            "cancelled_on": "date?",
        },
    ),
    # 电子证照库 ID photo; absent when none is held
    "photo": ("record?", {"photo_sha256": "text"}),
    # 住房公积金 provident-fund account; absent when there is none
    "fund": (
        "record?",
        {
            "account_no": "text",
            "status": "text",
            "balance": "money",
            "continuous_months": "int",
            "has_outstanding_loan": "bool",
            "last_rent_withdrawal_date": "date?",
            "retirement_category": "text?",
        },
    ),
    # 不动产 properties of the applicant and of the spouse (婚姻登记)
    "properties": ("list", {"property_id": "text", "region": "text"}),
    "spouse_properties": ("list", {"property_id": "text", "region": "text"}),
    # 社保 retirement recorded by social security; None when not retired
    "retired_on": ("date?", {}),
}
