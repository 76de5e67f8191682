"""Sign-off: a candidate the gate passed waits for a person before production moves (``CBNANO_REQUIRE_APPROVAL``).

With the setting on, :func:`pipelines.training.retrain.retrain` registers a passing candidate with
``"approval": "required"`` in its manifest and leaves production where it is. The ``domain_retraining`` DAG then
asks a person in the Airflow UI (an ``ApprovalOperator``, Airflow's human-in-the-loop "Required actions") with
:func:`approval_request`'s text as the question's body: the gate's verdict and every figure it decided on. The
answer comes back to :func:`settle`: approval moves production (a ``promote`` in the version's history, by the
person who answered) and tells System A; rejection records a ``reject`` with the person's reason and production
stays. On the command line, ``cbnano models promote`` and ``cbnano models reject`` do the same.
"""

from __future__ import annotations

import json
from typing import TypedDict

from pipelines.publishing.model_store import ModelStore, ModelStoreError
from pipelines.settings import Settings


class ApprovalRequest(TypedDict):
    """What the approval task shows: which version, and the body (Markdown) with the gate's figures."""

    domain: str
    version: str
    subject: str
    body: str


class Settled(TypedDict):
    """What became of a request: ``approved`` (production moved) or ``rejected``; who and why."""

    domain: str
    version: str
    outcome: str
    actor: str
    reason: str
    production: str | None
    system_a: str


def approval_request(settings: Settings, domain: str, version: str | None) -> ApprovalRequest | None:
    """The request for ``domain``'s ``version`` when it waits for sign-off, else None (no version, approval
    not required, or already approved or rejected)."""
    if not version:
        return None
    store = ModelStore(settings.model_store)
    manifest = store.manifest(domain, version)  # read once: the sign-off state and the gate's lines
    if store.approval(domain, version, manifest) != "pending":
        return None
    vdir = store.version_dir(domain, version)
    try:
        report = json.loads((vdir / "eval.json").read_text())
    except (OSError, ValueError):
        report = {}
    gate = report.get("gate") or manifest.get("gate") or {}
    lines = [str(x).strip() for x in gate.get("lines") or [gate.get("reason", "")] if str(x).strip()]
    card = report.get("dataset") or {}
    probe = card.get("probe") or {}
    body = [
        f"**{domain} {version}** passed the gate and waits for your sign-off before it becomes production "
        f"(production now: {store.production(domain) or 'none'}).",
        "",
        "Gate:",
        "",
        *(f"    {line}" for line in lines),
        "",
        f"Trained on {card.get('train', '?')} rows of month {card.get('month', '?')}; knowledge probe of "
        f"{probe.get('items', '?')} items over {probe.get('documents', '?')} documents. Model card, per-item "
        f"scores and intervals: `{vdir}`.",
        "",
        "Approve to move production to it; reject (with a reason) to keep production where it is.",
    ]
    return {
        "domain": domain,
        "version": version,
        "subject": f"Publish {domain} {version}?",
        "body": "\n".join(body),
    }


def settle(
    settings: Settings, domain: str, version: str, *, approved: bool, actor: str, reason: str = ""
) -> Settled:
    """Apply a person's answer: approval promotes ``version`` (and tells System A), rejection records why.
    Raises :class:`pipelines.publishing.model_store.ModelStoreError` when the version does not wait for one."""
    store = ModelStore(settings.model_store)
    state = store.approval(domain, version)
    if state != "pending":
        raise ModelStoreError(f"{domain}/{version} does not wait for approval ({state})")
    system_a = "unchanged"
    if approved:
        why = f"approved: {reason}" if reason else "approved"
        store.promote(domain, version, actor=actor, reason=why, allow_test_models=settings.allow_test_models)
        from pipelines.publishing.serving import hand_off

        system_a = hand_off(settings, domain)["state"]
    else:
        store.reject(domain, version, actor=actor, reason=reason or "rejected without a reason")
    return {
        "domain": domain,
        "version": version,
        "outcome": "approved" if approved else "rejected",
        "actor": actor,
        "reason": reason,
        "production": store.production(domain),
        "system_a": system_a,
    }
