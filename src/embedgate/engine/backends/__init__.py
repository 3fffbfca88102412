"""Model backends, chosen per registry entry by ``create_backend``."""

from __future__ import annotations

from embedgate.config.models import LocalModel, ModelSpec
from embedgate.config.settings import Settings
from embedgate.engine.backends.base import Backend


def create_backend(name: str, spec: ModelSpec, settings: Settings) -> Backend:
    if isinstance(spec, LocalModel) and spec.task == "rerank":
        from embedgate.engine.backends.rerank import RerankBackend

        return RerankBackend(name, spec, device=settings.device, warmup=settings.warmup)
    if isinstance(spec, LocalModel):
        from embedgate.engine.backends.local import LocalBackend

        return LocalBackend(name, spec, device=settings.device, warmup=settings.warmup)
    if spec.task == "rerank":
        from embedgate.engine.backends.upstream_rerank import UpstreamRerankBackend

        return UpstreamRerankBackend(name, spec)
    from embedgate.engine.backends.upstream import UpstreamBackend

    return UpstreamBackend(name, spec)
