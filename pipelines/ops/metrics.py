"""The platform's own metrics, sent as StatsD lines next to Airflow's (same exporter, prefix ``cbnano``).

Off unless ``CBNANO_STATSD_ON`` is true. UDP, fire-and-forget: a metrics outage never fails a run.

    emit_ingest(settings, "arxiv", summary, seconds=12.5, milvus_rows=40210)

sends ``cbnano.ingest.arxiv.fetched:25|c``, ``cbnano.ingest.arxiv.quarantined:1|c``,
``cbnano.embed.arxiv.chunks_per_second:112.3|g``, ``cbnano.milvus.rows.arxiv:40210|g`` and so on
(``include/monitoring/statsd_mapping.yml`` turns them into Prometheus series with labels).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping
from typing import Any

from pipelines.contracts import INGEST_COUNTS
from pipelines.settings import Settings

log = logging.getLogger(__name__)
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class StatsD:
    """A minimal StatsD client: counters, gauges and timers over UDP; ``sent`` keeps what went out."""

    def __init__(self, host: str, port: int, prefix: str = "cbnano", enabled: bool = True) -> None:
        self.address = (host, port)
        self.prefix = prefix
        self.enabled = enabled
        self.sent: list[str] = []
        self._sock: socket.socket | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StatsD:
        return cls(settings.statsd_host, settings.statsd_port, settings.statsd_prefix, settings.statsd_on)

    def _send(self, name: str, value: float, kind: str) -> None:
        line = f"{self.prefix}.{_NAME.sub('_', name)}:{value:g}|{kind}"
        self.sent.append(line)
        if not self.enabled:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.sendto(line.encode(), self.address)
        except OSError as exc:  # DNS failure, no route: metrics must not fail the work
            log.warning("statsd %s:%s unreachable (%s); dropped %s", *self.address, exc, line)

    def incr(self, name: str, value: float = 1) -> None:
        self._send(name, value, "c")

    def gauge(self, name: str, value: float) -> None:
        self._send(name, value, "g")

    def timing(self, name: str, ms: float) -> None:
        self._send(name, ms, "ms")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def emit_ingest(
    settings: Settings,
    source: str,
    summary: Mapping[str, Any],
    seconds: float | None = None,
    milvus_rows: int | None = None,
    client: StatsD | None = None,
) -> list[str]:
    """Send an ingestion run's figures; returns the lines (sent or not)."""
    statsd = client or StatsD.from_settings(settings)
    for key in INGEST_COUNTS:
        if key in summary:
            statsd.incr(f"ingest.{source}.{key}", int(summary[key]))
    if seconds and summary.get("chunks_upserted"):
        statsd.gauge(f"embed.{source}.chunks_per_second", round(summary["chunks_upserted"] / seconds, 2))
    if milvus_rows is not None:
        statsd.gauge(f"milvus.rows.{source}", milvus_rows)
    if client is None:
        statsd.close()
    return statsd.sent


def emit_retrain(
    settings: Settings,
    summary: Mapping[str, Any],
    train_losses: list[float] | None = None,
    client: StatsD | None = None,
) -> list[str]:
    """Send a retraining run's figures: final training loss, eval scores per model, the gate decision."""
    statsd = client or StatsD.from_settings(settings)
    domain = summary["domain"]
    if train_losses:
        statsd.gauge(f"train.{domain}.loss", round(float(train_losses[-1]), 4))
    for model, scores in (summary.get("metrics") or {}).items():
        for metric, value in (scores or {}).items():
            if isinstance(value, int | float):
                statsd.gauge(f"eval.{domain}.{model}.{metric}", round(float(value), 4))
    statsd.incr(f"gate.{domain}.{'published' if summary.get('published') else 'refused'}")
    if client is None:
        statsd.close()
    return statsd.sent
