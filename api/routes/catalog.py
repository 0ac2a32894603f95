from fastapi import APIRouter

from engine import registry, schedules

router = APIRouter(prefix="/api/v1", tags=["catalog"])

PLURAL = {"optimizer": "optimizers", "model": "models", "dataset": "datasets", "function": "functions", "loss": "losses"}
#: class attributes that matter to a user beyond the parameters
TRAITS = {"optimizer": ("full_batch_only",), "dataset": ("task", "standardize_by_default"), "loss": ("task",),
          "model": (), "function": ()}


@router.get("/catalog")
def get_catalog() -> dict[str, list[dict]]:
    """Every optimizer, model, dataset, function, loss and lr schedule, with parameter types, defaults and ranges."""
    catalog = {
        PLURAL[kind]: [registry.describe(cls) | {t: getattr(cls, t) for t in TRAITS[kind]}
                       for cls in registry.all_of(kind).values()]
        for kind in registry.KINDS
    }
    catalog["schedules"] = schedules.describe()
    return catalog
