from fastapi import APIRouter

from engine import registry

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/catalog")
def get_catalog() -> dict[str, list[dict]]:
    """Every optimizer, model, dataset, function and loss, with parameter types, defaults and ranges."""
    catalog = {f"{kind}s": [registry.describe(cls) for cls in registry.all_of(kind).values()] for kind in registry.KINDS}
    for entry, cls in zip(catalog["optimizers"], registry.all_of("optimizer").values()):
        entry["full_batch_only"] = cls.full_batch_only
    for entry, cls in zip(catalog["datasets"], registry.all_of("dataset").values()):
        entry["task"] = cls.task
    for entry, cls in zip(catalog["losses"], registry.all_of("loss").values()):
        entry["task"] = cls.task
    return catalog
