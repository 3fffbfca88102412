"""A tenant's effective policy, and the request checks it implies (before any model work).

Denials never echo the offending text or term: the message names the rule, not the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from embedgate.config import Policy
from embedgate.errors import EmbedgateError
from embedgate.storage.records import Tenant

__all__ = ["Policy", "effective_policy", "enforce_request"]


def effective_policy(plans: Mapping[str, Policy], tenant: Tenant) -> Policy:
    """The plan's defaults from the config file, overridden field by field by the tenant's."""
    plan = plans.get(tenant.plan)
    merged = {**(plan.stored() if plan else {}), **tenant.policy}
    return Policy.model_validate(merged)


@lru_cache(maxsize=1024)
def _blocked(terms: tuple[str, ...]) -> re.Pattern[str]:
    # Substrings, case-folded: works for scripts without word boundaries (Chinese, Japanese).
    return re.compile("|".join(re.escape(term.casefold()) for term in terms if term))


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
    if texts and policy.blocked_terms:
        _check_content(policy.blocked_terms, texts)


def _check_instruction(policy: Policy, instruction: str) -> None:
    allowlist = policy.instruction_allowlist
    if policy.allow_instructions is False or (
        allowlist is not None and instruction not in allowlist
    ):
        raise denied("Your plan does not allow this instruction.",
                     code="instruction_not_allowed", param="instruction")  # fmt: skip


def _check_content(terms: Iterable[str], texts: Sequence[str]) -> None:
    pattern = _blocked(tuple(terms))
    if pattern.pattern and any(pattern.search(text.casefold()) for text in texts):
        raise denied("The input contains content your organization blocks.",
                     code="content_blocked", param="input")  # fmt: skip
