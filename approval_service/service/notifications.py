"""The SMS text each decision sends the applicant, queued in the outbox with the decision.

Queued in the decision's own transaction, so a message is never lost between
deciding and sending (at-least-once delivery); the dedup key
(``application_id:event``) lets the SMS gateway drop repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from approval_service.service.records import outbox

SIGNATURE = "【亳州市政务服务】"
LABELS = {
    "band": "档次",
    "monthly_amount": "每月金额（元）",
    "payment_start": "起发日期",
    "certified_until": "认证有效期至",
    "amount": "提取金额（元）",
    "close_account": "销户",
    "card_no": "证号",
    "card_type": "类别",
    "issued_on": "发证日期",
    "expires_on": "有效期至",
    "mailing_address": "邮寄地址",
    "replaces_card_no": "原证号",
}


def _result_text(result: Mapping[str, Any]) -> str:
    parts = []
    for name, value in result.items():
        if value is None or name == "mailing_address":
            continue
        shown = "是" if value is True else str(value)
        parts.append(f"{LABELS.get(name, name)}：{shown}")
    return "，".join(parts)


def message_text(item_name: str, document: Mapping[str, Any], reviewed: bool = False) -> str:
    decision = document["decision"]
    how = "经人工审核" if reviewed else "经系统秒批"
    if decision == "approved":
        details = _result_text(document["result"])
        return f"{SIGNATURE}您申请的{item_name}{how}已办结。" + (f"{details}。" if details else "")
    if decision == "rejected":
        reasons = "；".join(f"{i}. {r['message']}" for i, r in enumerate(document["reasons"], 1))
        return f"{SIGNATURE}您申请的{item_name}{how}未通过。原因：{reasons} 如有疑问请拨打12345。"
    return (
        f"{SIGNATURE}您申请的{item_name}已转工作人员审核，"
        f"承诺于{document.get('deadline', '')}前办结，请留意短信通知。"
    )


def outbox_row(
    *, application_id: str, event: str, recipient_id: str, text: str, now: datetime
) -> dict[str, Any]:
    """An outbox row; ``attempts`` starts at 0 and the message is due at once."""
    return {
        "dedup_key": f"{application_id}:{event}",
        "application_id": application_id,
        "recipient_id": recipient_id,
        "text": text,
        "created_at": now,
        "next_attempt_at": now,
        "attempts": 0,
    }


def enqueue(
    conn: Connection,
    *,
    application_id: str,
    event: str,
    recipient_id: str,
    text: str,
    now: datetime,
) -> None:
    row = outbox_row(
        application_id=application_id, event=event, recipient_id=recipient_id, text=text, now=now
    )
    conn.execute(insert(outbox).values(**row))
