"""``miaopi rules show ITEM``: a policy as a Chinese summary for the staff who own it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from approval_service.policy.model import FactDecl, Policy
from approval_service.policy.types import Type

FACT_NAMES = {
    "person": "人口库",
    "low_income": "低保、特困人员库",
    "allowances": "高龄津贴发放记录",
    "cards": "老年人优待证记录",
    "photo": "电子证照库证件照片",
    "fund": "住房公积金账户",
    "properties": "不动产登记（本人）",
    "spouse_properties": "不动产登记（配偶）",
    "retired_on": "社保退休日期",
}
TYPE_NAMES = {"text": "文本", "int": "整数", "money": "金额（元）", "date": "日期", "bool": "是/否"}
ON_FAIL = {"reject": "驳回", "refer": "转人工"}


def type_name(typ: Type) -> str:
    name = TYPE_NAMES.get(typ.kind, str(typ))
    return name + ("，可为空" if typ.nullable else "")


def value_text(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


def _fact_line(decl: FactDecl) -> str:
    label = FACT_NAMES.get(decl.name, decl.name)
    if decl.shape in ("record", "record?", "list"):
        record = decl.type.item if decl.shape == "list" else decl.type
        assert record is not None
        fields = "、".join(f"{key}（{type_name(typ)}）" for key, typ in record.fields)
        kind = {"record?": "可能查无记录", "record": "必有记录", "list": "多条记录，可为空"}
        return f"{decl.name} {label}（{kind[decl.shape]}）：{fields}"
    return f"{decl.name} {label}：{type_name(decl.type)}"


def summary(policy: Policy) -> str:
    """The whole summary as plain text, one item per line."""
    lines = [
        f"事项名称：{policy.name}（{policy.item}）",
        f"部门：{policy.department}",
        f"版本：{policy.version}",
        f"依据：{policy.basis}",
    ]
    if policy.description:
        lines.append(f"说明：{policy.description.strip()}")
    lines.append(f"转人工承诺时限：{policy.referral_working_days}个工作日")
    lines += ["", "参数："]
    if not policy.parameters:
        lines.append("  （无）")
    for name, parameter in policy.parameters.items():
        lines.append(f"  {name}：{parameter.label}，{type_name(parameter.type)}")
        for day, value in zip(parameter.effective, parameter.values, strict=True):
            lines.append(f"    {day.isoformat()} 起：{value_text(value)}")
    lines += ["", "读取的数据："]
    lines += [f"  {_fact_line(decl)}" for decl in policy.facts.values()]
    if policy.form:
        lines += ["", "申请人填写："]
        for form_field in policy.form.values():
            need = "必填" if form_field.required else "选填"
            lines.append(
                f"  {form_field.label}（{form_field.name}，{need}，"
                f"{form_field.min_length}–{form_field.max_length}个字）"
            )
    if policy.defines:
        lines += ["", "推算值："]
        lines += [f"  {d.name} = {_one_line(d.expr.source)}" for d in policy.defines]
    lines += ["", "办理条件（全部满足才批准；不满足的一次性告知）："]
    for number, condition in enumerate(policy.conditions, 1):
        lines += [
            f"  {number}. {condition.code}　不满足时：{ON_FAIL[condition.on_fail]}",
            f"     要求：{_one_line(condition.require.source)}",
            f"     告知：{condition.message}",
            f"     依据：{condition.basis}",
        ]
    lines += ["", "办理结果："]
    if not policy.result:
        lines.append("  （无）")
    lines += [f"  {r.name} = {_one_line(r.expr.source)}" for r in policy.result]
    return "\n".join(lines)


def _one_line(source: str) -> str:
    return " ".join(source.split())
