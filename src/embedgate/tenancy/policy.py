"""A tenant's effective policy, and the request checks it implies (before any model work).

Denials never echo the offending text or term: the message names the rule, not the input.
Blocked terms match on normalized text (``content.normalize``), and token-id inputs are
decoded by the model's tokenizer and matched the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from embedgate.config.plans import Policy
from embedgate.engine.backends.base import Backend
from embedgate.errors import EmbedgateError
from embedgate.storage.records import Tenant
from embedgate.tenancy.content import contains_blocked

__all__ = ["Policy", "check_texts", "check_token_ids", "effective_policy", "enforce_request"]


def effective_policy(plans: Mapping[str, Policy], tenant: Tenant) -> Policy:
    """The plan's defaults from the config file, overridden field by field by the tenant's."""
    plan = plans.get(tenant.plan)
    merged = {**(plan.stored() if plan else {}), **tenant.policy}
    return Policy.model_validate(merged)


def denied(message: str, *, code: str, param: str) -> EmbedgateError:
    return EmbedgateError(403, message, code=code, param=param)


def check_model(policy: Policy, model: str) -> None:
    if policy.allowed_models is not None and model not in policy.allowed_models:
        raise denied(f"Your plan does not allow the model `{model}`.",
                     code="model_not_allowed", param="model")  # fmt: skip


def enforce_request(
    policy: Policy,
    *,
    model: str,
    dimensions: int,
    instruction: str | None,
    texts: Sequence[str] | None,
) -> None:
    """The content and permission checks; ``dimensions`` is what would be returned. The
    plan's input and token limits apply where the server's do (EmbeddingService)."""
    check_model(policy, model)
    if policy.max_dimensions is not None and dimensions > policy.max_dimensions:
        raise denied(f"Your plan allows at most {policy.max_dimensions} dimensions; "
                     "ask for fewer with `dimensions`.", code="dimension_limit_exceeded",
                     param="dimensions")  # fmt: skip
    if instruction is not None:
        _check_instruction(policy, instruction)
    if texts:
        check_texts(policy, texts)


def _check_instruction(policy: Policy, instruction: str) -> None:
    allowlist = policy.instruction_allowlist
    if policy.allow_instructions is False or (
        allowlist is not None and instruction not in allowlist
    ):
        raise denied("Your plan does not allow this instruction.",
                     code="instruction_not_allowed", param="instruction")  # fmt: skip


def check_texts(policy: Policy, texts: Sequence[str]) -> None:
    """403 ``content_blocked`` if a text holds a blocked term (both normalized)."""
    if policy.blocked_terms and contains_blocked(policy.blocked_terms, texts):
        raise denied("The input contains content your organization blocks.",
                     code="content_blocked", param="input")  # fmt: skip


async def check_token_ids(
    policy: Policy, backend: Backend, id_lists: Sequence[Sequence[int]]
) -> None:
    """Token ids embed like the text they spell: decode them with the model's tokenizer and
    check that text. A model without a local tokenizer cannot decode them, so a tenant with
    blocked terms must send text there."""
    if not policy.blocked_terms:
        return
    if not backend.can_tokenize():
        raise denied("Your organization blocks some content, and token ids cannot be checked "
                     "for it on this model: send the input as text.",
                     code="token_input_not_allowed", param="input")  # fmt: skip
    check_texts(policy, await backend.decode(id_lists))
