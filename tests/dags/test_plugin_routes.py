"""The registry plugin serves nothing without Airflow's login: not its pages, not an API browser."""

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]


def test_no_route_answers_without_login():
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(ROOT / "plugins"))
    from cbnano_registry import registry_app

    client = TestClient(registry_app)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    for path in ("/", "/ingestion", "/api/models", "/charts/catalysis/v1"):
        assert client.get(path).status_code in (401, 403), path
