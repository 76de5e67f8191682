import json
import os
import time

import pytest

from pipelines.publishing.model_store import ModelStore, ModelStoreError

pytestmark = pytest.mark.unit


def content(tmp_path, name, text="weights"):
    d = tmp_path / f"content-{name}"
    (d / "adapter").mkdir(parents=True)
    (d / "adapter" / "adapter_model.safetensors").write_text(text)
    (d / "MODEL_CARD.md").write_text(f"# {name}\n")
    return d


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "store")


def test_publish_writes_manifest_and_moves_production(store, tmp_path):
    path = store.publish("catalysis", "2026-11-a", content(tmp_path, "a"), {"metrics": {"mc_accuracy": 0.6}})
    man = json.loads((path / "manifest.json").read_text())
    assert set(man["files"]) == {"adapter/adapter_model.safetensors", "MODEL_CARD.md"}
    assert man["metrics"] == {"mc_accuracy": 0.6} and man["domain"] == "catalysis"
    assert store.production("catalysis") == "2026-11-a"
    assert os.readlink(store.root / "catalysis" / "production") == "versions/2026-11-a"
    assert store.verify("catalysis", "2026-11-a") == []


def test_versions_are_immutable(store, tmp_path):
    store.publish("thermal", "v1", content(tmp_path, "a"), {})
    with pytest.raises(ModelStoreError, match="immutable"):
        store.publish("thermal", "v1", content(tmp_path, "b"), {})


def test_crash_while_publishing_leaves_production_and_versions_intact(store, tmp_path, monkeypatch):
    store.publish("materials", "v1", content(tmp_path, "a"), {})
    before = sorted(p.name for p in (store.root / "materials" / "versions").iterdir())

    def crash(*a, **k):
        raise OSError("NFS went away")

    monkeypatch.setattr("pipelines.publishing.model_store.os.rename", crash)
    with pytest.raises(OSError):
        store.publish("materials", "v2", content(tmp_path, "b"), {})
    monkeypatch.undo()
    assert sorted(p.name for p in (store.root / "materials" / "versions").iterdir()) == before
    assert store.production("materials") == "v1"
    assert list((store.root / ".staging").iterdir()) == []  # the staging copy was cleaned up


def test_refused_candidate_publishes_nothing(store, tmp_path):
    with pytest.raises(ModelStoreError, match="not a folder"):
        store.publish("chemistry", "v1", tmp_path / "missing", {})
    assert not (store.root / "chemistry" / "versions").exists()


def test_checksums_are_verified_before_promotion(store, tmp_path):
    store.publish("chemistry", "v1", content(tmp_path, "a"), {})
    store.publish("chemistry", "v2", content(tmp_path, "b", "other weights"), {}, promote=False)
    assert store.production("chemistry") == "v1"
    (store.version_dir("chemistry", "v2") / "adapter" / "adapter_model.safetensors").write_text("tampered")
    with pytest.raises(ModelStoreError, match="changed adapter/adapter_model.safetensors"):
        store.promote("chemistry", "v2")
    assert store.production("chemistry") == "v1"


def test_rollback_moves_the_pointer_back(store, tmp_path):
    store.publish("thermal", "v1", content(tmp_path, "a"), {})
    store.publish("thermal", "v2", content(tmp_path, "b"), {})
    assert store.production("thermal") == "v2"
    assert store.rollback("thermal") == "v1" and store.production("thermal") == "v1"
    store.rollback("thermal", "v2")
    assert store.production("thermal") == "v2"
    assert [h["action"] for h in store.history("thermal")] == [
        "publish",
        "promote",
        "publish",
        "promote",
        "rollback",
        "rollback",
    ]


def test_a_move_that_cannot_be_recorded_is_not_made(store, tmp_path, monkeypatch):
    """history.jsonl turned into a folder: promote fails naming it, production stays, check reports it; a
    record failing after the move puts the pointer back."""
    store.publish("thermal", "v1", content(tmp_path, "a"), {})
    store.publish("thermal", "v2", content(tmp_path, "b"), {})
    history = store.root / "thermal" / "history.jsonl"
    kept = history.read_text()
    history.unlink()
    history.mkdir()
    with pytest.raises(ModelStoreError, match="cannot record the promote.*production was not moved"):
        store.promote("thermal", "v1")
    assert store.production("thermal") == "v2"
    assert store.check("thermal") == ["thermal: history.jsonl is not a readable file"]
    history.rmdir()
    history.write_text(kept)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_log", full)
    with pytest.raises(OSError, match="No space"):
        store.rollback("thermal", "v1")
    assert store.production("thermal") == "v2" and store.check("thermal") == []


def test_rollback_without_history_is_refused(store, tmp_path):
    store.publish("thermal", "v1", content(tmp_path, "a"), {})
    with pytest.raises(ModelStoreError, match="no earlier"):
        store.rollback("thermal")


def test_retention_keeps_production_previous_and_last_n(store, tmp_path):
    for i in range(1, 7):
        store.publish("catalysis", f"v{i}", content(tmp_path, f"x{i}"), {}, promote=i in (2, 3))
    # production v3, previous production v2, newest two: v5, v6
    removed = store.apply_retention("catalysis", keep_last=2)
    assert removed == ["v1", "v4"]
    assert [v.version for v in store.versions("catalysis")] == ["v2", "v3", "v5", "v6"]
    assert [v.version for v in store.versions("catalysis") if v.production] == ["v3"]


@pytest.mark.parametrize("domain,version", [("../etc", "v1"), ("thermal", "v1/../../x"), ("", "v1")])
def test_names_are_checked(store, tmp_path, domain, version):
    with pytest.raises(ModelStoreError, match="invalid"):
        store.publish(domain, version, content(tmp_path, "a"), {})


def test_retention_prunes_refused_candidates_before_former_production(store, tmp_path):
    for i, promoted in enumerate([True, False, True, True, False, False], 1):
        store.publish("thermal", f"v{i}", content(tmp_path, f"y{i}"), {}, promote=promoted)
    # production v4, previous v3; of the others v2, v5 and v6 were refused, v1 was production once
    assert store.apply_retention("thermal", keep_last=2) == ["v2", "v5"]
    assert [v.version for v in store.versions("thermal")] == ["v1", "v3", "v4", "v6"]
    deletes = [h for h in store.history("thermal") if h["action"] == "delete"]
    assert {h["actor"] for h in deletes} == {"retention"}


def test_history_records_who_and_why(store, tmp_path, monkeypatch):
    monkeypatch.setenv("CBNANO_ACTOR", "alice")
    store.publish(
        "materials",
        "v1",
        content(tmp_path, "a"),
        {},
        actor="airflow:domain_retraining/run1",
        reason="published: held-out loss gain +0.05 (95% CI +0.03..+0.07) > 0.010",
    )
    store.publish("materials", "v2", content(tmp_path, "b"), {}, promote=False, reason="refused: ...")
    store.promote("materials", "v2", reason="reviewed the samples by hand")
    last = store.history("materials")[-1]
    assert (last["action"], last["version"], last["actor"], last["reason"]) == (
        "promote",
        "v2",
        "alice",
        "reviewed the samples by hand",
    )
    assert store.history("materials")[1]["actor"] == "airflow:domain_retraining/run1"


def test_test_models_never_become_production_unless_allowed(store, tmp_path):
    store.publish("catalysis", "real", content(tmp_path, "r"), {"test_model": False})
    path = store.publish("catalysis", "tiny", content(tmp_path, "t"), {"test_model": True}, promote=False)
    assert path.is_dir()  # every candidate is a version
    with pytest.raises(ModelStoreError, match="test model"):
        store.promote("catalysis", "tiny")
    with pytest.raises(ModelStoreError, match="test model"):
        store.publish(
            "catalysis", "tiny2", content(tmp_path, "t2"), {"test_model": True}, allow_test_models=False
        )
    assert store.production("catalysis") == "real"
    store.promote("catalysis", "tiny", allow_test_models=True)
    assert store.production("catalysis") == "tiny"


def test_bases_by_store_name(store, tmp_path):
    (store.root / "base" / "smollm2").mkdir(parents=True)
    assert store.base_dir("smollm2") == store.root / "base" / "smollm2"
    elsewhere = tmp_path / "nfs" / "llama-8b"
    elsewhere.mkdir(parents=True)
    store.register_base("llama-8b", elsewhere)
    store.register_base("llama-8b", elsewhere)  # idempotent
    assert ModelStore(store.root).base_dir("llama-8b") == elsewhere.resolve()
    with pytest.raises(ModelStoreError, match="already names"):
        store.register_base("llama-8b", tmp_path)
    with pytest.raises(ModelStoreError, match="already names"):
        store.register_base("smollm2", elsewhere)


def test_torn_history_and_bad_manifest_are_reported_not_fatal(
    store, tmp_path, cbnano_env, monkeypatch, capsys
):
    from pipelines.cli import main
    from pipelines.reports import model_registry, render_registry

    monkeypatch.setenv("CBNANO_MODEL_STORE", str(store.root))
    from pipelines.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    store.publish("catalysis", "v1", content(tmp_path, "v1"), {})
    store.publish("catalysis", "v2", content(tmp_path, "v2"), {})
    with open(store.root / "catalysis" / "history.jsonl", "a") as fh:
        fh.write('{"at": "2026-12-01T00:00:00+00:00", "action": "prom')  # a crash mid-write
    (store.version_dir("catalysis", "v1") / "manifest.json").write_text("{not json")
    assert [m["version"] for m in store.history("catalysis")] == ["v1", "v1", "v2", "v2"]
    assert any("history.jsonl line 5 is unreadable" in p for p in store.check("catalysis"))
    listed = {v.version: v for v in store.versions("catalysis")}
    assert listed["v1"].problems and "cannot read manifest.json" in listed["v1"].problems[0]
    assert store.rollback("catalysis", "v2", actor="t") == "v2"  # still works
    assert main(["models", "list", "--json"]) == 1  # listed, with the problems on stderr
    out = capsys.readouterr()
    assert {v["version"] for v in json.loads(out.out)} == {"v1", "v2"}
    assert (
        "history.jsonl line 5 is unreadable" in out.err
        and "catalysis/v1: catalysis/v1: cannot read" in out.err
    )
    html = render_registry(model_registry(get_settings()), [])  # the registry page renders
    assert "version v2" in html


def test_models_list_verifies_files_and_pointers(store, tmp_path):
    store.publish("thermal", "t1", content(tmp_path, "t1"), {})
    store.publish("thermal", "t2", content(tmp_path, "t2"), {})
    (store.version_dir("thermal", "t2") / "adapter" / "adapter_model.safetensors").write_text("tampered")
    problems = {v.version: v.problems for v in store.versions("thermal", verify=True)}
    assert problems == {"t1": (), "t2": ("changed adapter/adapter_model.safetensors",)}
    link = store.root / "thermal" / "production"
    link.unlink()
    os.symlink("versions/t9", link)  # dangling
    assert store.check("thermal") == ["thermal: production points at t9, which does not exist"]
    link.unlink()
    os.symlink(str(tmp_path), link)  # outside the store
    assert store.production("thermal") is None
    assert store.check("thermal")[0].startswith("thermal: production points outside the store's versions")


def test_stale_staging_is_cleaned_and_publish_completes_an_interrupted_promotion(store, tmp_path):
    stale = store.root / ".staging" / "catalysis-v0-dead"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))
    fresh = store.root / ".staging" / "catalysis-v0-running"
    fresh.mkdir()
    now = time.time()
    os.utime(fresh, (now, now))  # "now" as the process sees it (the same clock the store compares with)
    gate = {"publish": True, "reason": "published: held-out loss gain +0.03"}
    store.publish(
        "catalysis", "v1", content(tmp_path, "v1"), {"gate": gate}, promote=False
    )  # crash before the move
    assert not stale.exists() and fresh.exists()
    assert store.production("catalysis") is None and store.interrupted_promotion("catalysis", "v1")
    store.promote("catalysis", "v1", actor="retry")
    assert not store.interrupted_promotion("catalysis", "v1")
    # a refused candidate, or one whose production someone moved since, is not "interrupted"
    store.publish("catalysis", "v2", content(tmp_path, "v2"), {"gate": {"publish": False}}, promote=False)
    assert not store.interrupted_promotion("catalysis", "v2")
    store.publish("catalysis", "v3", content(tmp_path, "v3"), {"gate": gate}, promote=False)
    store.rollback("catalysis", "v1", actor="alice")  # a human moved production after v3 was published
    assert not store.interrupted_promotion("catalysis", "v3")


def test_a_version_held_for_approval_waits_for_a_person(store, tmp_path, monkeypatch):
    from pipelines.publishing.approval import approval_request, settle
    from pipelines.settings import load_settings

    settings = load_settings({"CBNANO_HOME": str(tmp_path / "home"), "CBNANO_MODEL_STORE": str(store.root)})
    gate = {"publish": True, "reason": "passed: +0.08", "lines": ["passed: +0.08 (95% CI +0.02..+0.14)"]}
    store.publish("catalysis", "v1", content(tmp_path, "v1"), {"gate": gate})
    assert (
        store.approval("catalysis", "v1") == "not required"
        and approval_request(settings, "catalysis", "v1") is None
    )
    for v in ("v2", "v3"):
        store.publish(
            "catalysis", v, content(tmp_path, v), {"gate": gate, "approval": "required"}, promote=False
        )
    # a held version is not an interrupted promotion: no retry moves it
    assert store.approval("catalysis", "v2") == "pending" and not store.interrupted_promotion(
        "catalysis", "v2"
    )
    asked = approval_request(settings, "catalysis", "v2")
    assert asked is not None and asked["subject"] == "Publish catalysis v2?"
    assert "(95% CI +0.02..+0.14)" in asked["body"] and "production now: v1" in asked["body"]
    done = settle(settings, "catalysis", "v2", approved=True, actor="alice", reason="looked fine")
    assert done["outcome"] == "approved" and store.production("catalysis") == "v2"
    assert store.history("catalysis")[-1] | {"at": ""} == {
        "at": "",
        "action": "promote",
        "version": "v2",
        "actor": "alice",
        "reason": "approved: looked fine",
    }
    settle(settings, "catalysis", "v3", approved=False, actor="bob", reason="answers on ceria are wrong")
    assert store.production("catalysis") == "v2" and store.approval("catalysis", "v3") == "rejected"
    assert (
        store.history("catalysis")[-1]["action"] == "reject"
        and approval_request(settings, "catalysis", "v3") is None
    )
    with pytest.raises(ModelStoreError, match="does not wait for approval"):  # answered once, never twice
        settle(settings, "catalysis", "v3", approved=True, actor="carol")
    with pytest.raises(ModelStoreError, match="not published"):
        store.reject("catalysis", "v9")


def test_cli_rejects_a_held_version_with_a_reason(cbnano_env, tmp_path, capsys):
    from pipelines.cli import main

    store = ModelStore(cbnano_env.model_store)
    gate = {"publish": True, "reason": "passed"}
    store.publish(
        "thermal", "v1", content(tmp_path, "v1"), {"gate": gate, "approval": "required"}, promote=False
    )
    assert main(["models", "reject", "--domain", "thermal", "--version", "v1"]) == 2  # no reason: refused
    assert "needs --version and --reason" in capsys.readouterr().err
    assert main(["models", "reject", "--domain", "thermal", "--version", "v1", "--reason", "too vague"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"domain": "thermal", "action": "reject", "version": "v1", "production": None}
    assert (
        store.history("thermal")[-1]["reason"] == "too vague"
        and store.approval("thermal", "v1") == "rejected"
    )
    assert main(["models", "reject", "--domain", "thermal", "--version", "v1", "--reason", "again"]) == 2
