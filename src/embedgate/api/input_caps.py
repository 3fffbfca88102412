"""Caps on the size of one embeddings request, checked right after the JSON is parsed.

The body limit (bytes) does not bound the work: 55 MiB of JSON is 28 million token ids, or
60 million characters to tokenize. Before validation (which would visit every id) and
before tokenizing, the request's total characters and token ids are counted, one step per
input, and a request over either cap is refused with 400 ``input_too_large``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedgate.api.schemas.embeddings import MAX_INPUTS
from embedgate.config.settings import Settings
from embedgate.errors import invalid_request

CODE = "input_too_large"


@dataclass(frozen=True, slots=True)
class RequestCaps:
    max_chars: int
    max_token_ids: int

    @classmethod
    def of(cls, settings: Settings) -> RequestCaps:
        return cls(settings.max_request_chars, settings.max_request_token_ids)

    def check(self, data: Any) -> None:
        """400 when the request's ``input`` is over a cap; any other shape is left to
        validation, which refuses it."""
        value = data.get("input") if isinstance(data, dict) else None
        chars, ids = measure(value)
        for what, count, cap in (("characters", chars, self.max_chars),
                                 ("token ids", ids, self.max_token_ids)):  # fmt: skip
            if count > cap:
                raise invalid_request(
                    f"The request's inputs hold {count} {what} together; this server accepts "
                    f"at most {cap} per request. Send fewer or shorter inputs, or split the "
                    "request.", "input", code=CODE,
                )  # fmt: skip


def measure(value: Any) -> tuple[int, int]:
    """Characters and token ids of an ``input``, in one step per input (never per id)."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list) or not value:
        return 0, 0
    if type(value[0]) is int:  # one token-id array
        return 0, len(value)
    if len(value) > MAX_INPUTS:
        return 0, 0  # validation refuses it, at once
    chars = ids = 0
    for item in value:
        kind = type(item)
        if kind is str:
            chars += len(item)
        elif kind is list:
            ids += len(item)
    return chars, ids
