"""Build small policy texts for loader and type-checker tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from approval_service.policy.loader import load_policy_text
from approval_service.policy.model import Policy

BASE = """\
item: test-item
name: 测试事项
department: 测试部门
version: "1"
basis: 测试依据
parameters:
  min_age:
    label: 最低年龄
    type: int
    values:
      2020-01-01: 80
      2025-01-01: 81
  limit:
    label: 限额
    type: money
    values:
      2020-01-01: "600.00"
facts:
  person:
    optional: true
    fields:
      birth_date: date
      status: text
      last_seen_date: date?
  cards:
    list: true
    fields:
      status: text
      expires_on: date
      cancelled_on: date?
  fund:
    optional: true
    fields:
      balance: money
      last_rent_withdrawal_date: date?
conditions:
  - code: C1
    require: {require}
    on_fail: reject
    message: 消息
    basis: 依据
"""


@pytest.fixture
def policy_with() -> Callable[[str], Policy]:
    """A policy whose single condition requires the given expression."""

    def make(require: str) -> Policy:
        quoted = "'" + require.replace("'", "''") + "'"
        return load_policy_text(BASE.format(require=quoted), "test.yaml")

    return make
