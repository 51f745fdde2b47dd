"""Tokens passed in the URL (the streams' ``?access_token=``) never reach the access log."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import Service


async def test_access_log_redacts_query_tokens(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    token = service.token()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # A token in the query of a non-stream route is ignored (401) but still logged.
        response = await service.client.get(f"/v1/tasks?kind=a&access_token={token}&limit=5")
        assert response.status_code == 401
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert any("/v1/tasks?kind=a&access_token=[redacted]&limit=5" in line for line in lines), lines
    assert not any(token in line for line in lines), lines
