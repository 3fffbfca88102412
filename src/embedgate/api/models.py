"""GET /v1/models and /v1/models/{model}: OpenAI list shape, plus embedding facts."""

from __future__ import annotations

from fastapi import APIRouter

from embedgate.api.admission import AdmittedRoute
from embedgate.api.deps import CallerDep, RegistryDep
from embedgate.api.schemas.models import ModelList, ModelObject
from embedgate.engine.registry import ServedModel
from embedgate.tenancy.auth import Caller

router = APIRouter(prefix="/v1", tags=["models"], route_class=AdmittedRoute)


def describe(model: ServedModel) -> ModelObject:
    return ModelObject(
        id=model.name,
        created=model.created,
        dimensions=model.dimensions,
        max_tokens=model.max_tokens,
        aliases=list(model.spec.aliases),
        instructions=model.supports_instructions,
        task=model.task,
    )


def allowed(caller: Caller, model: ServedModel) -> bool:
    names = caller.policy.allowed_models
    return model.visible_to(caller.tenant.id) and (names is None or model.name in names)


@router.get("/models")
async def list_models(registry: RegistryDep, caller: CallerDep) -> ModelList:
    """The models this tenant may use."""
    return ModelList(data=[describe(m) for m in registry.all() if allowed(caller, m)])


@router.get("/models/{model:path}")
async def get_model(model: str, registry: RegistryDep, caller: CallerDep) -> ModelObject:
    served = registry.resolve(model)
    if not allowed(caller, served):
        raise registry.not_found(model)
    return describe(served)
