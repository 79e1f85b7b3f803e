"""Security case 22: schemathesis generates valid and invalid requests from the server's own
OpenAPI document (every operation, a bounded number of each kind) and none may get a 5xx or a
reply outside OpenAI's error shape. Afterwards the server must still be healthy.

Hypothesis drives schemathesis' strategies directly (its pytest plugin does not load on this
pytest version)."""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

EXAMPLES = 40  # per operation and mode; bounded (a few hundred requests in all)


def test_fuzz_no_server_errors(tiny_server):
    schema = schemathesis.openapi.from_url(tiny_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                                              "/tokenize", "/detokenize"}
    seen: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                response = case.call(base_url=tiny_server.url, timeout=60)
                seen.append(response.status_code)
                assert response.status_code < 500, (case.path, case.body, response.text[:500])
                if response.status_code >= 400:
                    error = response.json()["error"]  # never FastAPI's {"detail": ...}
                    assert {"message", "type", "param", "code"} <= set(error)

            try:
                check()
            except Unsatisfiable:  # no parameters to break (e.g. GET /health): nothing negative to send
                assert mode == GenerationMode.NEGATIVE
    assert 200 in seen and 400 in seen  # both accepted and rejected requests were exercised
    assert httpx.get(tiny_server.url + "/health", timeout=5).status_code == 200
