"""Every router, gathered in one place."""

from fastapi import APIRouter

from approval_service.api.routes import applications, health, items, review

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(items.router, prefix="/v1")
api_router.include_router(applications.router, prefix="/v1")
api_router.include_router(review.router, prefix="/v1")
