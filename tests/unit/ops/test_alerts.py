"""Alerts reach a webhook (a local HTTP server standing in for Slack/Mattermost), and never raise."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines.ops.alerts import send_alert
from pipelines.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(500 if received[-1]["subject"] == "explode" else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_webhook_gets_subject_body_and_fields(webhook):
    url, received = webhook
    settings = load_settings({"CBNANO_ALERT_WEBHOOK_URL": url})
    assert send_alert(
        settings,
        "literature_ingestion.fetch failed",
        "SourceError: 503 x5",
        {"run": "scheduled__2026-11-26", "try": 4},
    ) == ["webhook"]
    assert received[0]["subject"] == "literature_ingestion.fetch failed"
    assert received[0]["fields"] == {"run": "scheduled__2026-11-26", "try": 4}
    assert "SourceError: 503 x5" in received[0]["text"] and "try: 4" in received[0]["text"]


def test_failures_and_missing_channels_are_logged_not_raised(webhook, caplog):
    url, _ = webhook
    assert send_alert(load_settings({"CBNANO_ALERT_WEBHOOK_URL": url}), "explode", "body") == []
    assert "alert webhook" in caplog.text
    assert (
        send_alert(
            load_settings({"CBNANO_ALERT_EMAIL": "ml@lab", "CBNANO_SMTP_HOST": "127.0.0.1:1"}), "s", "b"
        )
        == []
    )
    assert "alert e-mail via 127.0.0.1:1 failed" in caplog.text
    assert send_alert(load_settings({}), "nothing configured", "b") == []
    assert "ALERT (no channel delivered it): *nothing configured*" in caplog.text


def test_a_failed_webhook_never_logs_its_token(webhook, caplog):
    url, _ = webhook
    secret = url.replace("/hook", "/services/T0001/B0002/s3cr3tT0k3n")
    assert send_alert(load_settings({"CBNANO_ALERT_WEBHOOK_URL": secret}), "explode", "body") == []
    port = secret.split(":")[2].split("/")[0]
    closed = "http://127.0.0.1:1/services/T0001/B0002/s3cr3tT0k3n"  # nothing listens: a connection error
    assert send_alert(load_settings({"CBNANO_ALERT_WEBHOOK_URL": closed}), "s", "b") == []
    assert "s3cr3tT0k3n" not in caplog.text and "/services/" not in caplog.text
    assert f"alert webhook http://127.0.0.1:{port}/… failed: HTTP 500" in caplog.text
    assert "alert webhook http://127.0.0.1:1/… failed: ConnectionError" in caplog.text
    dumped = load_settings(
        {"CBNANO_ALERT_WEBHOOK_URL": secret, "CBNANO_SEARCH_TOKEN": "t0k", "CBNANO_SYSTEM_A_TOKEN": "t1k"}
    ).as_dict()
    assert "s3cr3tT0k3n" not in str(dumped) and "t0k" not in str(dumped) and "t1k" not in str(dumped)
