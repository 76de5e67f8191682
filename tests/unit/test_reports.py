"""The registry page shows every version, the production marker and the gate's intervals."""

import json

import pytest

from pipelines.lake import write_json
from pipelines.publishing.model_store import ModelStore
from pipelines.reports import model_registry, render_registry, retrain_decisions

pytestmark = pytest.mark.unit

GATE = {
    "publish": False,
    "reason": "refused: held-out loss gain +0.012 (95% CI -0.004..+0.028) <= 0.010 vs base",
    "comparisons": [
        {
            "metric": "heldout_loss",
            "baseline": "base",
            "n": 48,
            "gain": 0.012,
            "ci_low": -0.004,
            "ci_high": 0.028,
            "mde": 0.02,
            "candidate_mean": 2.1,
            "baseline_mean": 2.112,
        }
    ],
}


def test_registry_lists_refused_versions_with_their_intervals(cbnano_env, tmp_path):
    store = ModelStore(cbnano_env.model_store)
    content = tmp_path / "c"
    content.mkdir()
    report = {
        "metrics": {"base": {"heldout_loss": 2.112}, "candidate": {"heldout_loss": 2.1}},
        "gate": GATE,
        "domain": "thermal",
        "version": "2026-11.aa",
    }
    (content / "eval.json").write_text(json.dumps(report))
    store.publish("thermal", "2026-11.aa", content, {"gate": GATE}, promote=False, reason=GATE["reason"])
    write_json(
        cbnano_env.runs_dir / "thermal-run" / "eval.json", {**report, "finished_at": "2026-12-01T03:00:00"}
    )
    registry = model_registry(cbnano_env)
    [entry] = registry
    assert entry["production"] is None and entry["versions"][0]["comparisons"][0]["ci_low"] == -0.004
    html = render_registry(registry, retrain_decisions(cbnano_env))
    assert "version 2026-11.aa" in html and "(production)" not in html
    assert "<th>95% CI</th>" in html and "-0.004 .. +0.028" in html and "<td>48</td>" in html
    assert "refused: held-out loss gain +0.012 (95% CI -0.004..+0.028)" in html


def test_registry_shows_what_system_a_last_confirmed_and_a_failed_hand_off(cbnano_env, tmp_path):
    from pipelines.publishing.serving import STATE_FILE

    store = ModelStore(cbnano_env.model_store)
    content = tmp_path / "c"
    content.mkdir()
    (content / "eval.json").write_text("{}")
    store.publish("catalysis", "v2", content, {}, promote=True)
    html = render_registry(model_registry(cbnano_env), [])
    assert "System A: no hand-off recorded" in html
    write_json(
        cbnano_env.model_store / "catalysis" / STATE_FILE,
        {
            "domain": "catalysis",
            "version": "v2",
            "state": "failed",
            "attempted_at": "2026-12-01T04:00:00+00:00",
            "error": "System A at http://systema:8000 did not answer GET /v1/models after 3 attempt(s): <refused>",
            "confirmed": {"version": "v1", "confirmed_at": "2026-11-01T04:00:00+00:00"},
        },
    )
    html = render_registry(model_registry(cbnano_env), [])
    assert "System A did not take v2 (2026-12-01T04:00:00+00:00)" in html
    assert "&lt;refused&gt;" in html and "<refused>" not in html  # escaped
    assert "it last confirmed v1 at 2026-11-01T04:00:00+00:00" in html
    write_json(
        cbnano_env.model_store / "catalysis" / STATE_FILE,
        {"domain": "catalysis", "version": "v2", "state": "confirmed", "confirmed_at": "2026-12-01T05:00:00"},
    )
    assert "System A serves v2 (confirmed 2026-12-01T05:00:00)" in render_registry(
        model_registry(cbnano_env), []
    )
