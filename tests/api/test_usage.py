"""GET /admin/usage (JSON and CSV) and the usage in GET /v1/me, fed through the meter."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from embedgate.storage.records import UsageRecord
from embedgate.tenancy.usage import UsageMeter
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, TEST_TENANT, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DAY = datetime(2026, 11, 21, tzinfo=UTC)
NO_RERANK = {"rerank_requests": 0, "rerank_inputs": 0, "rerank_tokens": 0}


def usage(tenant_id: str, at: datetime, *, tokens: int = 10, status: int = 200,
          uid: str | None = None) -> UsageRecord:  # fmt: skip
    return UsageRecord(tenant_id, "key_1", "all-minilm-l6-v2", "/v1/embeddings", 2, tokens,
                       None, status, 4.0, at, tenant_uid=uid)  # fmt: skip


@pytest.fixture
async def app(app_factory: Any) -> AppClient:
    started: AppClient = await app_factory(warmup=False)
    return started


def meter(app: AppClient) -> UsageMeter:
    return app.app.state.runtime.control.usage  # type: ignore[no-any-return]


async def test_usage_needs_the_admin_key(app: AppClient) -> None:
    for headers in ({}, {"Authorization": "Bearer admin_wrong"}):
        response = await app.http.get("/admin/usage", headers={"Authorization": "", **headers})
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY
    assert (await app.http.get("/admin/usage")).status_code == 401  # a tenant key is not enough


async def test_usage_per_tenant_and_day_or_hour_in_json(app: AppClient) -> None:
    for record in (
        usage("a", DAY + timedelta(hours=1)),
        usage("a", DAY + timedelta(hours=1, minutes=5), tokens=0, status=429),
        usage("a", DAY + timedelta(hours=3), tokens=5),
        usage("b", DAY + timedelta(days=1)),
        usage("a", DAY - timedelta(days=30)),  # outside the range
    ):
        meter(app).record(record)  # not flushed yet: the report must include it anyway
    params = {"start": "2026-11-21", "end": "2026-11-23"}
    response = await app.http.get("/admin/usage", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["granularity"] == "day"
    assert (body["start"], body["end"]) == ("2026-11-21T00:00:00Z", "2026-11-23T00:00:00Z")
    assert body["data"] == [
        {"tenant": "a", "start": "2026-11-21T00:00:00Z", "end": "2026-11-22T00:00:00Z",
         "requests": 3, "errors": 1, "inputs": 4, "tokens": 15, **NO_RERANK},
        {"tenant": "b", "start": "2026-11-22T00:00:00Z", "end": "2026-11-23T00:00:00Z",
         "requests": 1, "errors": 0, "inputs": 2, "tokens": 10, **NO_RERANK},
    ]  # fmt: skip
    hourly = await app.http.get(
        "/admin/usage", params={**params, "tenant": "a", "granularity": "hour"}, headers=ADMIN
    )
    assert [(r["start"], r["requests"], r["tokens"]) for r in hourly.json()["data"]] == [
        ("2026-11-21T01:00:00Z", 2, 10),
        ("2026-11-21T03:00:00Z", 1, 5),
    ]


async def test_usage_as_csv_for_billing(app: AppClient) -> None:
    meter(app).record(usage("a", DAY + timedelta(hours=1)))
    meter(app).record(usage("b", DAY + timedelta(hours=2), tokens=7))
    response = await app.http.get(
        "/admin/usage",
        params={"start": "2026-11-21T00:00:00Z", "end": "2026-11-22T00:00:00+00:00",
                "format": "csv"},
        headers=ADMIN,
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    header = ["tenant", "start", "end", "requests", "errors", "inputs", "tokens"]
    assert rows == [
        [*header, "rerank_requests", "rerank_inputs", "rerank_tokens"],
        ["a", "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", "1", "0", "2", "10", "0", "0", "0"],
        ["b", "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", "1", "0", "2", "7", "0", "0", "0"],
    ]


async def test_usage_defaults_to_this_month(app: AppClient) -> None:
    now = datetime.now(UTC)
    meter(app).record(usage(TEST_TENANT, now - timedelta(seconds=1)))
    body = (await app.http.get("/admin/usage", headers=ADMIN)).json()
    assert body["start"] == now.strftime("%Y-%m-01T00:00:00Z")
    assert [(r["tenant"], r["requests"]) for r in body["data"]] == [(TEST_TENANT, 1)]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "last tuesday"}, "start"),
        ({"end": "2026-02-30"}, "end"),
        ({"start": "2026-11-22", "end": "2026-11-21"}, "start"),
        ({"granularity": "minute"}, "granularity"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_bad_parameters_are_openai_shaped_400s(
    app: AppClient, params: dict[str, str], param: str
) -> None:
    response = await app.http.get("/admin/usage", params=params, headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_value", param
    )  # fmt: skip
    assert param in error["message"]


async def test_me_shows_this_months_usage_of_the_callers_tenant_only(app: AppClient) -> None:
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    caller = await app.app.state.runtime.control.tenants.get(TEST_TENANT)
    meter(app).record(usage(TEST_TENANT, now, tokens=3, uid=caller.uid))
    await meter(app).flush()
    meter(app).record(usage(TEST_TENANT, now, tokens=4, uid=caller.uid))  # still pending
    meter(app).record(usage(TEST_TENANT, now, tokens=50, status=500, uid=caller.uid))
    meter(app).record(usage(TEST_TENANT, this_month - timedelta(seconds=1), tokens=100,
                            uid=caller.uid))  # fmt: skip
    # the tenant id's earlier incarnation (a deleted tenant's uid) is not the caller's
    meter(app).record(usage(TEST_TENANT, now, tokens=2000, uid="tn_deleted"))
    meter(app).record(usage("another-tenant", now, tokens=1000))
    body = (await app.http.get("/v1/me")).json()
    assert (
        body["usage"]
        | {
            "period": this_month.strftime("%Y-%m"),
            "start": this_month.strftime("%Y-%m-%dT00:00:00Z"),
            "requests": 3,
            "tokens": 7,
            "inputs": 4,
        }
        == body["usage"]
    )  # quota fields may come beside these
