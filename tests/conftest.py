"""Shared fixtures. Airflow's home is a throwaway folder set before anything imports Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fixture_lake import stage_fixtures

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cbnano-test-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if str(ROOT / "dags") not in sys.path:
    sys.path.insert(0, str(ROOT / "dags"))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def cbnano_env(tmp_path, monkeypatch):
    """A fresh CBNANO_HOME under tmp_path, no politeness delay, fast retries, test models allowed to become
    production; returns the Settings."""
    from pipelines.settings import get_settings, reset_settings_cache

    for key in list(os.environ):
        if key.startswith("CBNANO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CBNANO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CBNANO_ARXIV_DELAY_S", "0")
    monkeypatch.setenv("CBNANO_HTTP_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("CBNANO_HTTP_BACKOFF_S", "0.01")
    monkeypatch.setenv("CBNANO_HTTP_TIMEOUT_S", "5")
    monkeypatch.setenv("CBNANO_MILVUS_LITE_IDLE_S", "3")  # shared Lite servers do not outlive a test by long
    monkeypatch.setenv("CBNANO_ALLOW_TEST_MODELS", "1")  # tiny candidates may become production in tests
    reset_settings_cache()
    yield get_settings()
    reset_settings_cache()


@pytest.fixture
def replay(monkeypatch, cbnano_env):
    """Start a ReplayServer on the fixture window and point the arXiv settings at it."""
    from pipelines.replay import ReplayServer
    from pipelines.settings import reset_settings_cache

    servers = []

    def start(corpus=None, **kwargs):
        srv = ReplayServer(
            corpus=corpus if corpus is not None else [FIXTURES / "arxiv/window_2026-11-26.xml"],
            rss_dir=FIXTURES / "arxiv/rss",
            **kwargs,
        ).start()
        servers.append(srv)
        monkeypatch.setenv("CBNANO_ARXIV_API_URL", srv.arxiv_api_url)
        monkeypatch.setenv("CBNANO_ARXIV_RSS_URL", srv.arxiv_rss_url)
        reset_settings_cache()
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def staged_lake(replay, monkeypatch, cbnano_env):
    """The fixture papers and compounds staged in a fresh home (a PubChem replay beside arXiv's); returns the
    Settings."""
    from pipelines.settings import get_settings, reset_settings_cache

    srv = replay(pubchem_dir=FIXTURES / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    reset_settings_cache()
    settings = get_settings()
    stage_fixtures(settings)
    return settings


@pytest.fixture(scope="session")
def airflow_db():
    """An initialised Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"])


TIERS = ("unit", "dags", "integration", "milvus_server", "cluster", "browser", "llama")


def pytest_collection_modifyitems(config, items):
    """Every test belongs to exactly one tier, so `-m TIER` (and the default selection) misses none."""
    wrong = [
        item.nodeid for item in items if sum(1 for t in TIERS if item.get_closest_marker(t) is not None) != 1
    ]
    if wrong:
        raise pytest.UsageError(f"tests without exactly one tier marker ({', '.join(TIERS)}): {wrong[:5]}")


_TIER_SECONDS: dict[str, float] = {}
_TIER_TESTS: dict[str, int] = {}


def pytest_runtest_logreport(report):
    """Sum each tier's time (setup, call and teardown of its tests) for the closing summary."""
    tier = next((t for t in TIERS if t in report.keywords), None)
    if tier is None:
        return
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    if report.when == "call":
        _TIER_TESTS[tier] = _TIER_TESTS.get(tier, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """Where the suite's time went, per tier (session fixtures count in the first test that needs them)."""
    if not _TIER_SECONDS:
        return
    terminalreporter.section("time per tier")
    for tier in TIERS:
        if tier in _TIER_SECONDS:
            terminalreporter.write_line(
                f"{tier:<14} {_TIER_TESTS.get(tier, 0):>4} tests {_TIER_SECONDS[tier]:>8.1f} s"
            )
