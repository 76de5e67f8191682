"""Issue 22's probe pass, item by item: each hostile or clumsy input named there, and the fixed behaviour.

The items that need a real Milvus Lite file, a real server process or a killed parent are in
``tests/integration/test_hardening_processes.py``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.cli import main as cli_main
from pipelines.publishing.model_store import ModelStore
from pipelines.settings import SettingsError, load_settings, reset_settings_cache

pytestmark = pytest.mark.unit


def _entry(raw_id: str, title: str) -> str:
    return f"""<entry>
    <id>http://arxiv.org/abs/{raw_id}</id>
    <published>2026-11-25T10:00:00Z</published><updated>2026-11-25T10:00:00Z</updated>
    <title>{title}</title><summary>An abstract about {title}.</summary>
    <author><name>A. Author</name></author>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="cond-mat.mtrl-sci"/>
    <category term="cond-mat.mtrl-sci"/>
  </entry>"""


def _feed(*entries: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
        f"<opensearch:totalResults>{len(entries)}</opensearch:totalResults>"
        "<opensearch:startIndex>0</opensearch:startIndex>"
        f"<opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>" + "".join(entries) + "</feed>"
    ).encode()


# 1. one arXiv entry blocks its whole window --------------------------------------------------------------
def test_an_absurd_version_quarantines_its_entry_and_keeps_the_others():
    from pipelines.sources.arxiv import parse_api_feed, parse_arxiv_id

    feed = parse_api_feed(
        _feed(_entry("2611.00001v99999999999999999999", "Overflow"), _entry("2611.00002v1", "Good paper"))
    )
    assert [p.arxiv_id for p in feed.papers] == ["2611.00002"]
    assert len(feed.rejects) == 1 and "not an arXiv version" in feed.rejects[0]["reason"]
    assert parse_arxiv_id("2611.00002v12") == ("2611.00002", 12)
    with pytest.raises(ValueError):
        parse_arxiv_id("2611.00002v0")


def test_a_row_the_store_cannot_hold_is_named_before_any_write():
    from pipelines.vectorstore.milvus import row_problem

    good = {"version": 3, "chunk_index": 0, "chunk_count": 1}
    assert row_problem(good) is None
    assert "INT64" in (row_problem({**good, "version": 10**20}) or "")
    assert "version" in (row_problem({**good, "version": "7"}) or "")


# 2. long ids never collide -----------------------------------------------------------------------------
def test_long_ids_stay_unique_stable_and_within_the_field():
    from pipelines.vectorstore.milvus import FIELD_LIMITS, fit_id

    a, b = "x" * 150 + "/0000001", "x" * 150 + "/0000002"
    fa, fb = fit_id(a, "doc_id"), fit_id(b, "doc_id")
    assert fa != fb and fit_id(a, "doc_id") == fa and fit_id(fa, "doc_id") == fa
    assert len(fa.encode()) <= FIELD_LIMITS["doc_id"] and len(fb.encode()) <= FIELD_LIMITS["doc_id"]
    assert fit_id("2611.00001", "doc_id") == "2611.00001"  # ids that fit are kept as they are
    multibyte = "é" * 100  # 200 bytes: cut on a character boundary
    assert fit_id(multibyte, "doc_id").encode().decode() == fit_id(multibyte, "doc_id")


def test_long_old_style_archive_names_are_not_arxiv_ids():
    from pipelines.sources.arxiv import parse_arxiv_id

    assert parse_arxiv_id("cond-mat/0601234v2") == ("cond-mat/0601234", 2)
    with pytest.raises(ValueError):
        parse_arxiv_id("a" * 200 + "/0601234")


# 3. a promote whose hand-off gets a strange answer --------------------------------------------------------
class _SystemA(BaseHTTPRequestHandler):
    body = b"[]"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def system_a():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SystemA)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _published(settings, domain="catalysis", version="v1", adapter_config=True):
    content = Path(settings.home) / f"content-{version}"
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_model.safetensors").write_text("weights")
    if adapter_config:
        (content / "adapter" / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": "smollm2", "r": 8})
        )
    ModelStore(settings.model_store).publish(domain, version, content, {}, promote=False)


@pytest.mark.parametrize("answer", [b"[]", b'"ok"', b'{"data": "oops"}', b'{"data": [5]}'])
def test_promote_with_a_strange_system_a_answer_moves_records_and_alerts(
    cbnano_env, system_a, monkeypatch, capsys, answer
):
    monkeypatch.setattr(_SystemA, "body", answer)
    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", system_a)
    reset_settings_cache()
    _published(cbnano_env)
    alerts = []
    monkeypatch.setattr("pipelines.ops.alerts.send_alert", lambda *a, **k: alerts.append(a[1]) or [])
    rc = cli_main(["models", "promote", "--domain", "catalysis", "--version", "v1"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["system_a"] == "failed"
    assert "Traceback" not in err and "production moved, but System A did not take it" in err
    state = json.loads((Path(cbnano_env.model_store) / "catalysis" / "serving.json").read_text())
    assert state["state"] == "failed" and "not a model list" in state["error"]
    assert alerts == ["System A did not take catalysis v1"]
    assert ModelStore(cbnano_env.model_store).production("catalysis") == "v1"


def test_a_hand_off_that_cannot_read_the_adapter_is_recorded_not_raised(cbnano_env, system_a, monkeypatch):
    from pipelines.publishing.serving import hand_off

    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", system_a)
    reset_settings_cache()
    _published(cbnano_env, adapter_config=False)
    ModelStore(cbnano_env.model_store).promote("catalysis", "v1")
    outcome = hand_off(load_settings(), "catalysis", alert=False)
    assert outcome["state"] == "failed" and "adapter_config.json" in outcome["error"]


def test_a_system_a_url_that_is_not_a_url_is_one_line(cbnano_env, monkeypatch, capsys):
    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", "not a url")
    reset_settings_cache()
    rc = cli_main(["models", "list"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "CBNANO_SYSTEM_A_URL='not a url'" in err


# 4. two simultaneous promotes agree --------------------------------------------------------------------
def _promote_many(root: str, version: str, rounds: int) -> None:
    store = ModelStore(Path(root))
    for _ in range(rounds):
        store.promote("thermal", version, actor=version)


def test_concurrent_promotes_leave_pointer_and_history_agreeing(tmp_path):
    store = ModelStore(tmp_path / "store")
    for v in ("V1", "V2"):
        c = tmp_path / f"c-{v}"
        c.mkdir()
        (c / "w.bin").write_text(v)
        store.publish("thermal", v, c, {}, promote=False)
    ctx = multiprocessing.get_context("fork")
    for _ in range(5):
        procs = [ctx.Process(target=_promote_many, args=(str(store.root), v, 15)) for v in ("V1", "V2")]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        moves = [m for m in store.history("thermal") if m["action"] == "promote"]
        assert store.production("thermal") == moves[-1]["version"]
    assert len([m for m in store.history("thermal") if m["action"] == "promote"]) == 150
    assert store.check("thermal") == []


# 5. a torn history line ---------------------------------------------------------------------------------
def test_a_torn_history_line_does_not_swallow_the_next_record(tmp_path):
    store = ModelStore(tmp_path / "store")
    c = tmp_path / "c"
    c.mkdir()
    (c / "w.bin").write_text("x")
    store.publish("materials", "v1", c, {}, promote=False)
    with open(store.root / "materials" / "history.jsonl", "a") as fh:
        fh.write('{"at": "2026-12-01T00:00:00+00:00", "action": "prom')  # a crash mid-write
    store.promote("materials", "v1", actor="alice")
    last = store.history("materials")[-1]
    assert (last["action"], last["version"], last["actor"]) == ("promote", "v1", "alice")
    assert any("line 2 is unreadable" in p for p in store.check("materials"))


# 6. versions without a usable manifest ---------------------------------------------------------------------
@pytest.mark.parametrize("manifest", [None, "5", '{"metrics": "oops", "files": {}}', "[1, 2]"])
def test_a_version_with_a_bad_manifest_is_listed_with_its_problem(cbnano_env, capsys, manifest):
    from pipelines.reports import model_registry, render_registry

    _published(cbnano_env, domain="chemistry")
    store = ModelStore(cbnano_env.model_store)
    store.promote("chemistry", "v1")
    path = store.version_dir("chemistry", "v1") / "manifest.json"
    if manifest is None:
        path.unlink()
    else:
        path.write_text(manifest)
    rc = cli_main(["models", "list"])
    out, err = capsys.readouterr()
    assert rc == 1 and "v1" in out and "PROBLEMS" in out and "Traceback" not in err
    assert "chemistry/v1" in err
    html = render_registry(model_registry(cbnano_env), [])
    assert "data-version='v1'" in html and "class='refused'>problem" in html


# 7. lab drops ------------------------------------------------------------------------------------------
def test_lab_drops_that_are_not_files_or_not_utf8_are_named_and_skipped(tmp_path):
    from pipelines.training.datasets import internal_examples

    drop = tmp_path / "catalysis"
    drop.mkdir()
    good = {"instruction": "What is TOF?", "output": "Turnover frequency.", "doc": "tof"}
    (drop / "a-good.jsonl").write_text(json.dumps(good) + "\n")
    os.mkfifo(drop / "fifo.jsonl")
    (drop / "folder.jsonl").mkdir()
    (drop / "dangling.jsonl").symlink_to(drop / "nowhere.jsonl")
    (drop / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(good) + "\n")
    (drop / "latin1.jsonl").write_bytes(
        json.dumps({**good, "output": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n"
    )
    examples, problems = internal_examples(drop)
    text = "\n".join(problems)
    assert len(examples) == 2  # the good file, and the good line after the deep one
    assert "fifo.jsonl: not a regular file" in text and "folder.jsonl: not a regular file" in text
    assert "dangling.jsonl: a dangling link" in text
    assert "deep.jsonl:1: JSON nested too deep" in text
    assert "latin1.jsonl: not UTF-8 (byte 0xe9" in text


# 8. PubChem --------------------------------------------------------------------------------------------
def _stage(tmp_path, props, requested, descs=None):
    from pipelines.ingestion.pubchem import stage_compounds

    raw = tmp_path / "run" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "properties-0000.json").write_text(json.dumps(props))
    (raw / "descriptions-0000.json").write_text(json.dumps(descs or {"InformationList": {"Information": []}}))
    m = stage_compounds(
        {
            "dir": str(tmp_path / "run"),
            "pages": ["0000"],
            "resolved": {},
            "requested": requested,
            "not_found": [],
        }
    )
    records = [json.loads(line) for line in open(m["uri"])]
    reasons = [json.loads(line)["reason"] for line in open(m["quarantine_uri"])]
    return m, records, reasons


@pytest.mark.parametrize(
    "body, said",
    [
        ({"PropertyTable": "oops"}, "not a PropertyTable"),
        (
            {"Fault": {"Code": "PUGREST.ServerBusy", "Message": "Too many requests"}},
            "a Fault (PUGREST.ServerBusy",
        ),
    ],
)
def test_a_pubchem_answer_of_the_wrong_shape_is_quarantined_not_lost(tmp_path, body, said):
    m, records, reasons = _stage(tmp_path, body, [2244])
    assert records == [] and m["quarantined"] == 2
    assert any(said in r for r in reasons)
    assert any("no usable property row for CID 2244" in r for r in reasons)


def test_pubchem_cids_that_are_not_whole_numbers_or_not_asked_for_are_quarantined(tmp_path):
    row = {"Title": "x", "MolecularFormula": "C", "MolecularWeight": "12"}
    props = {
        "PropertyTable": {
            "Properties": [
                {**row, "CID": 1.5},
                {**row, "CID": True},
                {**row, "CID": 999},  # nobody asked for it
                {**row, "CID": 2244, "MolecularWeight": "NaN"},
            ]
        }
    }
    m, records, reasons = _stage(tmp_path, props, [1, 2244])
    assert [r["cid"] for r in records] == [2244]
    assert records[0]["weight"] is None and "nan" not in records[0]["text"].lower()
    text = " | ".join(reasons)
    assert "CID 1.5 is not a whole number" in text and "CID true is not a whole number" in text
    assert "CID 999, which was not asked for" in text
    assert "no usable property row for CID 1" in text  # 1.5 and true are not CID 1


def test_pubchem_json_nested_too_deep_is_one_source_error():
    import requests

    from pipelines.sources.http import SourceError
    from pipelines.sources.pubchem import _json

    resp = requests.Response()
    resp._content = b"[" * 200_000 + b"]" * 200_000
    resp.status_code = 200
    resp.url = "https://pubchem.example/compound/cid/property/JSON"
    with pytest.raises(SourceError, match="nested too deep"):
        _json(resp)


def test_a_corrupt_name_cache_is_set_aside_not_a_traceback(tmp_path):
    from pipelines.ingestion.pubchem import NameCache

    path = tmp_path / "name_cache.json"
    path.write_text('{"aspirin": {"cids": [2244], "at": "2026-11-01T00:00:00+00:00"}, "broken": ')
    cache = NameCache(path)
    assert cache.get("aspirin") is None and (tmp_path / "name_cache.json.corrupt").is_file()
    path.write_text(
        json.dumps({"a": {"cids": [True]}, "b": 5, "c": {"cids": [7], "at": "2026-11-30T00:00:00+00:00"}})
    )
    assert list(NameCache(path).entries) == ["c"]


def test_pubchem_weights_that_are_not_finite_are_no_weight():
    from pipelines.sources.pubchem import _float

    assert _float("NaN") is None and _float("inf") is None and _float(True) is None
    assert math.isclose(_float("180.16") or 0, 180.16)


# 9. settings that are not checked ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, value",
    [
        ("CBNANO_GPUS", "abc"),
        ("CBNANO_GPUS", "-1"),
        ("CBNANO_HTTP_TIMEOUT_S", "0"),
        ("CBNANO_STATSD_PORT", "99999"),
        ("CBNANO_SMTP_HOST", "127.0.0.1:abc"),
        ("CBNANO_SYSTEM_A_URL", "not a url"),
        ("CBNANO_TEACHER_URL", "ftp://teacher"),
        ("CBNANO_ARXIV_API_URL", "http://"),
        ("CBNANO_REPLAY_SHARE", "1.5"),
        ("CBNANO_ARXIV_DELAY_S", "nan"),
    ],
)
def test_every_bad_setting_is_one_line_naming_it_at_load(name, value, cbnano_env, monkeypatch, capsys):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})
    monkeypatch.setenv(name, value)
    reset_settings_cache()
    rc = cli_main(["stats"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and name in err and "Traceback" not in err  # bad input


def test_a_secret_url_that_is_wrong_is_named_but_not_echoed():
    with pytest.raises(SettingsError) as exc:
        load_settings({"CBNANO_ALERT_WEBHOOK_URL": "hooks.example/T000/s3cretpath"})
    assert "CBNANO_ALERT_WEBHOOK_URL" in str(exc.value) and "s3cretpath" not in str(exc.value)


def test_good_settings_still_load():
    s = load_settings(
        {"CBNANO_GPUS": "2", "CBNANO_SMTP_HOST": "mail.lab:2525", "CBNANO_STATSD_PORT": "65535"}
    )
    assert (s.gpus, s.smtp_host, s.statsd_port) == (2, "mail.lab:2525", 65535)


# 10. search --------------------------------------------------------------------------------------------
def test_the_category_filter_matches_whole_categories_only():
    from pipelines.vectorstore.milvus import MilvusStore

    expr = MilvusStore.filter_for(category="physics.chem-ph")
    assert 'categories == "physics.chem-ph"' in expr and '"% physics.chem-ph %"' in expr
    assert '"%physics.chem-ph%"' not in expr  # no substring match


def test_the_search_service_answers_400_for_a_bad_k_and_503_when_the_store_is_held(cbnano_env):
    from fastapi.testclient import TestClient

    from pipelines.retrieval.service import create_app
    from pipelines.vectorstore.milvus import VectorStoreError

    def held():
        raise VectorStoreError(f"{cbnano_env.milvus_uri} is held by pid 4242 (cbnano search-service)")

    with TestClient(create_app(cbnano_env, open_searcher=held)) as client:
        bad = client.get("/search", params={"q": "LiPS", "k": "abc"})
        assert bad.status_code == 400 and "k" in bad.json()["detail"]
        down = client.get("/search", params={"q": "LiPS"})
        assert down.status_code == 503 and "held by pid 4242" in down.json()["detail"]


def test_tokens_in_a_query_string_are_masked_in_the_access_log():
    import logging

    from pipelines.retrieval.service import RedactAccessLog, redact_query

    assert redact_query("/search?q=LiPS&token=s3cret&k=5") == "/search?q=LiPS&token=***&k=5"
    assert redact_query("/search?api_key=abc") == "/search?api_key=***"
    assert redact_query("/healthz") == "/healthz"
    rec = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/search?q=x&access_token=s3cret", "1.1", 200), None,
    )  # fmt: skip
    assert RedactAccessLog().filter(rec) and "s3cret" not in rec.getMessage()


def test_search_on_an_empty_home_creates_no_milvus_file(cbnano_env, capsys):
    rc = cli_main(["search", "lithium"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing ingested yet" in err
    assert not Path(cbnano_env.milvus_uri).exists()
