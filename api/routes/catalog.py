from fastapi import APIRouter

from services.catalog import catalog

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/catalog")
def get_catalog() -> dict[str, list[dict]]:
    """Every optimizer, model, dataset, function, loss and lr schedule, with parameter types, defaults and ranges."""
    return catalog()
