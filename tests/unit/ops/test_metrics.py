"""StatsD lines of the platform's metrics, caught by a local UDP listener, and the monitoring config."""

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from pipelines.ops.metrics import StatsD, emit_retrain
from pipelines.settings import load_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "include/monitoring"


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def received(sock, n):
    return [sock.recv(1024).decode() for _ in range(n)]


def test_retrain_figures_reach_the_listener(listener):
    settings = load_settings(
        {
            "CBNANO_STATSD_ON": "true",
            "CBNANO_STATSD_HOST": "127.0.0.1",
            "CBNANO_STATSD_PORT": str(listener.getsockname()[1]),
        }
    )
    sent = emit_retrain(
        settings,
        {
            "domain": "catalysis",
            "published": False,
            "metrics": {
                "base": {"mc_accuracy": 0.425, "val_loss": 3.3251},
                "candidate": {"mc_accuracy": 0.45, "val_loss": 3.30917},
            },
        },
        train_losses=[3.9, 3.41234],
    )
    assert (
        received(listener, len(sent))
        == sent
        == [
            "cbnano.train.catalysis.loss:3.4123|g",
            "cbnano.eval.catalysis.base.mc_accuracy:0.425|g",
            "cbnano.eval.catalysis.base.val_loss:3.3251|g",
            "cbnano.eval.catalysis.candidate.mc_accuracy:0.45|g",
            "cbnano.eval.catalysis.candidate.val_loss:3.3092|g",
            "cbnano.gate.catalysis.refused:1|c",
        ]
    )


def test_off_by_default_and_never_raises():
    settings = load_settings({})
    assert settings.statsd_on is False
    client = StatsD.from_settings(settings)
    client.incr("x")
    assert client.sent == ["cbnano.x:1|c"]  # recorded, not sent
    unreachable = StatsD("no-such-host.invalid", 8125)
    unreachable.gauge("y", 2)  # a DNS failure is logged, not raised
    assert unreachable.sent == ["cbnano.y:2|g"]


def _mapping_rules():
    return yaml.safe_load((MONITORING / "statsd_mapping.yml").read_text())["mappings"]


def _rule_for(line):
    name = line.split(":")[0]
    for rule in _mapping_rules():
        if re.fullmatch(rule["match"].replace(".", r"\.").replace("*", r"[^.]+"), name):
            return rule
    return None


def test_every_metric_has_a_prometheus_mapping_and_the_dashboard_uses_only_mapped_series():
    lines = emit_retrain(
        load_settings({}),
        {"domain": "thermal", "published": True, "metrics": {"candidate": {"mc_accuracy": 0.5}}},
        [1.0],
    )
    from pipelines.ops.metrics import emit_ingest

    lines += emit_ingest(
        load_settings({}),
        "pubchem",
        {"fetched": 3, "new": 2, "quarantined": 1, "not_found": 4, "chunks_upserted": 2},
        seconds=2.0,
        milvus_rows=10,
    )
    assert all(_rule_for(line) for line in lines), [line for line in lines if not _rule_for(line)]
    mapped = {r["name"] for r in _mapping_rules()}
    dashboard = json.loads((MONITORING / "grafana/dashboards/cbnano.json").read_text())
    series = {
        m
        for p in dashboard["panels"]
        for t in p.get("targets", [])  # a row panel has none
        for m in re.findall(r"cbnano_[a-z_]+", t["expr"])
        if not m.startswith(
            "cbnano_gateway_"
        )  # scraped from the gateway itself (tests/deploy/test_compose.py)
    }
    assert series and series <= mapped
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["statsd-exporter:9102"]
