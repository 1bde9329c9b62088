"""Property-based fuzzing of the published OpenAPI with Schemathesis: for every operation, a
bounded number of generated requests (valid and invalid, positive and negative) against the
running service. None may answer 5xx, and every 4xx is problem+json. SQLite only (the schema and
the handlers are the same on PostgreSQL; the API tests run on both), about 30 s."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from tests.support.service import Stack, stack

__all__ = ["stack"]

EXAMPLES = int(os.environ.get("MAILCONNECT_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def service_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'mailconnect.db'}"


@pytest.fixture(scope="module")
def operations(stack: Stack) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{stack.service.url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def test_the_schema_lists_every_operation(operations: list[schemathesis.APIOperation]) -> None:
    labels = {op.label for op in operations}
    assert "POST /v1/messages" in labels
    assert "POST /v1/connections/{connection_id}/test" in labels
    assert len(labels) >= 25


def test_no_generated_request_gets_a_server_error(
    stack: Stack, operations: list[schemathesis.APIOperation]
) -> None:
    tenant = stack.tenant()
    tenant.connection()
    failures: list[str] = []
    calls: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(stack, operation, mode, tenant.key, calls)
    assert not failures, "\n".join(failures[:20])
    assert len(calls) >= len(operations) * EXAMPLES
    assert {200, 201, 404, 422} <= set(calls)


def _fuzz(
    stack: Stack,
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    key: str,
    calls: list[int],
) -> list[str]:
    failures: list[str] = []
    token = stack.service.operator_token if operation.path.startswith("/v1/tenants") else key
    headers = {"Authorization": f"Bearer {token}"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def exercise(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        response = case.call(base_url=stack.service.url, headers=headers, timeout=30)
        calls.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code} {response.text[:300]}")
        elif response.status_code >= 400:
            content_type = response.headers.get("content-type", "")
            if "problem+json" not in str(content_type):
                failures.append(f"{operation.label}: {response.status_code} not a problem")

    try:
        exercise()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        assert mode is GenerationMode.NEGATIVE
    return failures
