"""Alerts to people: a JSON webhook (Slack/Teams/Mattermost-style ``{"text": ...}``) and/or e-mail over SMTP.

Configured by ``CBNANO_ALERT_WEBHOOK_URL``, ``CBNANO_ALERT_EMAIL`` and ``CBNANO_SMTP_HOST`` /
``CBNANO_SMTP_USER`` / ``CBNANO_SMTP_PASSWORD``; with none set, an alert is only logged. Sending never raises:
an alert that cannot be delivered is logged as an error, and the caller's failure handling goes on.

    send_alert(settings, "literature_ingestion failed", "fetch: arXiv answered 503 five times", {"run": ...})
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import requests

from pipelines.settings import Settings, redact_url

__all__ = ["redact_url", "send_alert"]

log = logging.getLogger(__name__)


def _why(exc: requests.RequestException) -> str:
    """Why a webhook post failed, without the URL that requests puts in its messages."""
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    return type(exc).__name__


def send_alert(
    settings: Settings, subject: str, body: str, fields: Mapping[str, Any] | None = None
) -> list[str]:
    """Deliver one alert on every configured channel; returns the channels that accepted it."""
    fields = dict(fields or {})
    delivered: list[str] = []
    text = f"*{subject}*\n{body}" + "".join(f"\n{k}: {v}" for k, v in fields.items())
    if settings.alert_webhook_url:
        try:
            resp = requests.post(
                settings.alert_webhook_url,
                timeout=10,
                json={"text": text, "subject": subject, "body": body, "fields": fields},
            )
            resp.raise_for_status()
            delivered.append("webhook")
        except requests.RequestException as exc:
            log.error("alert webhook %s failed: %s", redact_url(settings.alert_webhook_url), _why(exc))
    if settings.alert_email and settings.smtp_host:
        msg = EmailMessage()
        msg["Subject"] = f"[cbnano] {subject}"
        msg["From"] = settings.smtp_user or "cbnano@localhost"
        msg["To"] = settings.alert_email
        msg.set_content(text.replace("*", ""))
        host, _, port = settings.smtp_host.partition(":")
        try:
            with smtplib.SMTP(host, int(port or 25), timeout=10) as smtp:
                if settings.smtp_user and settings.smtp_password:
                    smtp.starttls()
                    smtp.login(settings.smtp_user, settings.smtp_password)
                smtp.send_message(msg)
            delivered.append("email")
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            log.error("alert e-mail via %s failed: %s", settings.smtp_host, exc)
    if not delivered:
        log.warning("ALERT (no channel delivered it): %s", text)
    return delivered


async def deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> list[str]:
    """Airflow deadline callback (runs in the triggerer): a run has not finished by its deadline."""
    import asyncio

    from pipelines.settings import get_settings

    dag_run = (context or {}).get("dag_run")
    fields = {
        "dag": kwargs.get("dag_id") or getattr(dag_run, "dag_id", "?"),
        "run": getattr(dag_run, "run_id", None) or (context or {}).get("run_id", "?"),
        "deadline": kwargs.get("deadline", ""),
    }
    return await asyncio.to_thread(
        send_alert,
        get_settings(),
        f"{fields['dag']} missed its deadline",
        kwargs.get("message", "the run has not finished in time"),
        fields,
    )
