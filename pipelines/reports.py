"""What operators read: the model registry, the retraining gate decisions and the ingestion run reports.

Plain Python over the model store, the training run folders and the data lake, so the same views serve the
Airflow UI page (``plugins/cbnano_registry.py``), tests and scripts. Read-only.

    registry = model_registry(get_settings())
    page = render_registry(registry, retrain_decisions(get_settings()), airflow_base="/")
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from pipelines.contracts import INGEST_COUNTS, RatedAnswer
from pipelines.lake import run_summaries
from pipelines.publishing.model_store import ModelStore
from pipelines.publishing.serving import HandOff
from pipelines.settings import DOMAINS, Settings

log = logging.getLogger(__name__)

# knowledge first (the gate's primary and its open-book guard), then the forgetting guard and held-out loss
METRICS = (
    "knowledge_closed_doc",
    "knowledge_closed_cal",
    "knowledge_closed",
    "knowledge_open",
    "knowledge_choice_only",
    "mc_accuracy",
    "mc_prob",
    "heldout_loss",
)


class RegistryVersion(TypedDict):
    """One published version on the registry page."""

    version: str
    production: bool
    published_at: str
    problems: list[str]  # what is wrong with its manifest or files
    metrics: dict[str, dict[str, float]]  # role → metric → mean (eval.json; else the manifest's candidate's)
    gate: str  # the gate's reason
    comparisons: list[dict[str, object]]  # the gate's paired comparisons (evaluation.gate)
    dataset_sha256: str
    dataset_examples: dict[str, int | None]  # train, validation
    dataset_tokens: float | None
    base_model: str
    profile: str
    origin: dict[str, str]  # the Airflow run (dag_id, run_id) or command that made it
    chart: str | None


class RegistryEntry(TypedDict):
    """One domain on the registry page."""

    domain: str
    production: str | None
    versions: list[RegistryVersion]
    system_a: NotRequired[HandOff]  # the last hand-off's record
    flagged: NotRequired[list[RatedAnswer]]


class Decision(TypedDict):
    """One retraining run's gate decision."""

    domain: str | None
    version: str | None
    publish: bool | None
    reason: str | None
    comparisons: list[dict[str, object]]
    finished_at: str
    origin: dict[str, str]
    run_dir: str


class IngestionRun(TypedDict):
    """One ingestion run on the ingestion page."""

    source: str
    partition: str
    run: str
    finished_at: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    path: str


def _json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def model_registry(settings: Settings) -> list[RegistryEntry]:
    """Per domain: its production version and every published version with metrics, dataset and origin."""
    store = ModelStore(settings.model_store)
    out: dict[str, RegistryEntry] = {}
    for info in store.versions():
        report = _json(info.path / "eval.json")
        card = _json(info.path / "dataset_card.json")
        manifest = _json(info.path / "manifest.json")
        entry = out.setdefault(
            info.domain, {"domain": info.domain, "production": store.production(info.domain), "versions": []}
        )
        gate = _obj(report.get("gate")) or _obj(manifest.get("gate"))
        metrics = {k: v for k, v in _obj(report.get("metrics")).items() if isinstance(v, dict)}
        entry["versions"].append(
            {
                "version": info.version,
                "production": info.production,
                "published_at": info.published_at,
                "problems": list(info.problems),
                "metrics": metrics or {"candidate": info.metrics},
                "gate": str(gate.get("reason", "")),
                "comparisons": [c for c in gate.get("comparisons") or [] if isinstance(c, dict)],
                "dataset_sha256": str(card.get("sha256") or manifest.get("dataset_sha256", "")),
                "dataset_examples": {"train": card.get("train"), "validation": card.get("validation")},
                "dataset_tokens": _obj(card.get("tokens")).get("total"),
                "base_model": manifest.get("base_model", ""),
                "profile": manifest.get("profile", ""),
                "origin": _obj(manifest.get("origin")) or _obj(report.get("origin")),
                "chart": str(info.path / "eval.png") if (info.path / "eval.png").is_file() else None,
            }
        )
    from pipelines.publishing.serving import serving_state

    flagged = flagged_answers(settings)
    for entry in out.values():
        entry["versions"].sort(key=lambda v: (v["published_at"], v["version"]), reverse=True)
        entry["system_a"] = serving_state(settings, entry["domain"])
        entry["flagged"] = flagged.get(entry["domain"], [])
    return [out[d] for d in sorted(out)]


def flagged_answers(settings: Settings, limit: int = 20) -> dict[str, list[RatedAnswer]]:
    """Per domain, the newest ``+rag`` answers the lab rated -1 in the gateway (for people to look at); {}
    when the gateway has no database yet or it cannot be read."""
    if not settings.gateway_db and not (Path(settings.home) / "gateway.db").is_file():
        return {}
    try:
        from pipelines.ops.traces import GatewayStore

        store = GatewayStore.from_settings(settings)
        return {d: store.rated(d, -1)[-limit:][::-1] for d in DOMAINS}
    except Exception as exc:  # noqa: BLE001 - the registry page shows models even when the gateway's DB is down
        log.warning("gateway feedback not shown: %s", exc)
        return {}


def _system_a_line(state: HandOff) -> str:
    """What System A serves for a domain, from the last hand-off's record."""
    if not state:
        return "<p class='muted'>System A: no hand-off recorded</p>"
    if state.get("state") == "confirmed":
        return (
            f"<p class='system-a ok'>System A serves {_fmt(state.get('version'))} "
            f"(confirmed {_fmt(state.get('confirmed_at'))})</p>"
        )
    confirmed = state.get("confirmed") or {}
    last = (
        f"; it last confirmed {_fmt(confirmed.get('version'))} at {_fmt(confirmed.get('confirmed_at'))}"
        if confirmed
        else "; it has never confirmed a version"
    )
    return (
        f"<p class='system-a refused'>System A did not take {_fmt(state.get('version'))} "
        f"({_fmt(state.get('attempted_at'))}): {_fmt(state.get('error'))}{last}</p>"
    )


def retrain_decisions(settings: Settings, limit: int = 20) -> list[Decision]:
    """The newest retraining runs' gate decisions (published or refused), newest first."""
    reports = sorted(
        Path(settings.runs_dir).glob("*/eval.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    out: list[Decision] = []
    for path in reports[:limit]:
        r = _json(path)
        out.append(
            {
                "domain": r.get("domain"),
                "version": r.get("version"),
                "publish": (r.get("gate") or {}).get("publish"),
                "reason": (r.get("gate") or {}).get("reason"),
                "comparisons": (r.get("gate") or {}).get("comparisons") or [],
                "finished_at": r.get("finished_at", ""),
                "origin": r.get("origin") or {},
                "run_dir": str(path.parent),
            }
        )
    return out


def ingestion_runs(settings: Settings, limit: int = 30) -> list[IngestionRun]:
    """The newest ingestion runs' reports (``summary.json`` in the lake), with quarantine reasons counted."""
    out: list[IngestionRun] = []
    for run in run_summaries(settings.data_dir, limit=limit):
        path = run.path
        s = _json(path)
        reasons: Counter[str] = Counter()
        quarantine = path.with_name("quarantine.jsonl")
        if quarantine.is_file():
            for line in quarantine.read_text().splitlines():
                try:
                    reasons[str(json.loads(line).get("reason", "?"))] += 1
                except ValueError:
                    reasons["unreadable quarantine line"] += 1
        out.append(
            {
                "source": run.source,
                "partition": run.day,
                "run": run.run,
                "finished_at": s.get("finished_at", ""),
                "counts": {k: s[k] for k in INGEST_COUNTS if k in s},
                "quarantine_reasons": dict(reasons.most_common()),
                "path": str(path.parent),
            }
        )
    return out


# ---- HTML -------------------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}h1{font-size:1.4rem}h2{font-size:1.15rem;
margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #cbd5e0;padding:.3rem .6rem;
text-align:left;font-size:.9rem}th{background:#edf2f7}.prod{background:#c6f6d5;font-weight:600}.muted{color:#718096}
.refused{color:#c53030}.ok{color:#276749}nav a{margin-right:1rem}img{max-width:520px;border:1px solid #e2e8f0}
"""


def _page(title: str, body: str, base: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><nav><a href='{base}'>Model registry</a>"
        f"<a href='{base}ingestion'>Ingestion runs</a></nav><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else escape(str(value)) if value is not None else "–"


def _signed(value: Any) -> str:
    return f"{value:+.3f}" if isinstance(value, int | float) else "–"


def _run_link(origin: dict[str, str], airflow_base: str) -> str:
    if not origin.get("dag_id"):
        return "<span class='muted'>CLI</span>"
    href = f"{airflow_base}dags/{escape(origin['dag_id'])}/runs/{escape(origin['run_id'])}"
    return f"<a href='{href}' target='_top'>{escape(origin['run_id'])}</a>"


def render_registry(
    registry: list[RegistryEntry], decisions: list[Decision], base: str = "./", airflow_base: str = "/"
) -> str:
    """The registry page: per domain, versions with base/production/candidate metrics, charts, datasets."""
    parts = []
    if not registry:
        parts.append("<p class='muted'>No model has been published yet.</p>")
    for entry in registry:
        d = escape(entry["domain"])
        parts.append(
            f"<h2 id='{d}'>{d} <span class='muted'>production: {_fmt(entry['production'])}</span></h2>"
        )
        parts.append(_system_a_line(entry.get("system_a") or {}))
        for v in entry["versions"]:
            cls = " class='prod'" if v["production"] else ""
            models = [m for m in ("base", "production", "candidate") if m in v["metrics"]]
            head = "".join(f"<th>{m}</th>" for m in models)
            rows = "".join(
                f"<tr><td>{m}</td>"
                + "".join(f"<td>{_fmt(v['metrics'][k].get(m))}</td>" for k in models)
                + "</tr>"
                for m in METRICS
            )
            ex = v["dataset_examples"]
            comps = "".join(
                f"<tr><td>{escape(str(c.get('metric')))}</td><td>{escape(str(c.get('baseline')))}</td>"
                f"<td>{_fmt(c.get('n'))}</td><td>{_signed(c.get('gain'))}</td>"
                f"<td>{_signed(c.get('ci_low'))} .. {_signed(c.get('ci_high'))}</td><td>{_fmt(c.get('mde'))}</td></tr>"
                for c in v.get("comparisons", [])
            )
            comp_table = (
                (
                    f"<table class='ci'><tr><th>metric</th><th>vs</th><th>n</th><th>gain</th><th>95% CI</th>"
                    f"<th>detectable</th></tr>{comps}</table>"
                )
                if comps
                else ""
            )
            parts.append(
                f"<table data-version='{escape(v['version'])}'><tr><th colspan='2'{cls}>version {escape(v['version'])}"
                f"{' (production)' if v['production'] else ''}</th></tr>"
                f"<tr><td>published</td><td>{_fmt(v['published_at'])}</td></tr>"
                f"<tr><td>base model / profile</td><td>{_fmt(v['base_model'])} / {_fmt(v['profile'])}</td></tr>"
                f"<tr><td>dataset</td><td><code>{escape(v['dataset_sha256'][:16])}</code> · {_fmt(ex['train'])} "
                f"train / {_fmt(ex['validation'])} validation examples · {_fmt(v['dataset_tokens'])} tokens</td></tr>"
                f"<tr><td>gate</td><td>{_fmt(v['gate'])}</td></tr>"
                + "".join(
                    f"<tr><td class='refused'>problem</td><td class='refused'>{escape(p)}</td></tr>"
                    for p in v.get("problems", [])
                )
                + f"<tr><td>made by run</td><td>{_run_link(v['origin'], airflow_base)}</td></tr></table>"
                f"<table><tr><th>metric</th>{head}</tr>{rows}</table>{comp_table}"
            )
            if v["chart"]:
                parts.append(f"<img alt='evaluation chart' src='{base}charts/{d}/{escape(v['version'])}'>")
        if entry.get("flagged"):
            rows = "".join(
                f"<tr><td>{_fmt(f.get('at'))}</td><td>{_fmt(f.get('question'))}</td><td>{_fmt(f.get('answer'))}</td>"
                f"<td>{_fmt(', '.join(f.get('sources') or []))}</td><td>{_fmt(f.get('comment'))}</td></tr>"
                for f in entry["flagged"]
            )
            parts.append(
                f"<h3 class='refused'>Answers rated -1 in the gateway ({d}+rag)</h3><table class='flagged'>"
                f"<tr><th>rated</th><th>question</th><th>answer</th><th>sources</th><th>comment</th></tr>{rows}</table>"
            )
    parts.append("<h2>Recent retraining decisions</h2>")
    if decisions:
        rows = "".join(
            f"<tr><td>{_fmt(r['finished_at'])}</td><td>{_fmt(r['domain'])}</td><td>{_fmt(r['version'])}</td>"
            f"<td class='{'ok' if r['publish'] else 'refused'}'>{'published' if r['publish'] else 'refused'}</td>"
            f"<td>{_fmt(r['reason'])}</td><td>{_run_link(r['origin'], airflow_base)}</td></tr>"
            for r in decisions
        )
        parts.append(
            "<table><tr><th>finished</th><th>domain</th><th>version</th><th>gate</th><th>reason</th>"
            f"<th>run</th></tr>{rows}</table>"
        )
    else:
        parts.append("<p class='muted'>No retraining run has finished yet.</p>")
    return _page("CB Nano model registry", "".join(parts), base)


def render_ingestion(runs: list[IngestionRun], base: str = "./") -> str:
    """The ingestion runs page: counts and quarantine reasons per run."""
    if not runs:
        return _page(
            "CB Nano ingestion runs", "<p class='muted'>No ingestion run has finished yet.</p>", base
        )
    keys = list(INGEST_COUNTS)
    rows = "".join(
        f"<tr><td>{_fmt(r['finished_at'])}</td><td>{escape(r['source'])}</td><td>{escape(r['partition'])}</td>"
        + "".join(f"<td>{_fmt(r['counts'].get(k))}</td>" for k in keys)
        + "<td>"
        + (
            "<br>".join(f"{n} × {escape(reason)}" for reason, n in r["quarantine_reasons"].items())
            or "<span class='muted'>none</span>"
        )
        + "</td></tr>"
        for r in runs
    )
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = (
        f"<table><tr><th>finished</th><th>source</th><th>partition</th>{head}<th>quarantined because</th>"
        f"</tr>{rows}</table>"
    )
    return _page("CB Nano ingestion runs", body, base)
