"""GET /v1/items: the items with their Chinese names and policy versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from approval_service.api.deps import ChannelDep, ContainerDep
from approval_service.api.responses import JSON

router = APIRouter(tags=["items"])


@router.get("/items", summary="Items, their Chinese names, departments, policy versions and forms")
async def list_items(container: ContainerDep, channel: ChannelDep) -> Any:
    items = [
        {
            "item": policy.item,
            "name": policy.name,
            "department": policy.department,
            "version": policy.version,
            "sha256": policy.sha256,
            "basis": policy.basis,
            "referral_working_days": policy.referral_working_days,
            "form": [
                {
                    "name": f.name,
                    "label": f.label,
                    "required": f.required,
                    "min_length": f.min_length,
                    "max_length": f.max_length,
                }
                for f in policy.form.values()
            ],
        }
        for policy in sorted(container.policies.policies.values(), key=lambda p: p.item)
    ]
    return JSON({"items": items})
