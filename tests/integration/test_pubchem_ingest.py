"""The real PubChem client against a misbehaving replay server, with real MiniLM and Milvus Lite."""

import json
from datetime import date

import pytest

from pipelines.replay import Rule
from pipelines.settings import get_settings, reset_settings_cache
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration
YELLOW = "Request Count status: Yellow (55%), Request Time status: Green (5%), Service status: Green (10%)"


@pytest.fixture
def pubchem(replay, fixtures_dir, monkeypatch):
    def start(rules=()):
        srv = replay(pubchem_dir=fixtures_dir / "pubchem", rules=list(rules))
        monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
        reset_settings_cache()
        return srv

    return start


def test_ingest_misbehaving_server_then_rerun_is_noop(pubchem):
    from pipelines.embedding.minilm import get_embedder
    from pipelines.ingestion.pubchem import ingest_pubchem

    srv = pubchem(
        rules=[
            Rule(
                "/rest/pug/compound/cid/property",
                status=503,
                body=b"<html><body>Server Busy</body></html>",
                headers={"Content-Type": "text/html"},
            ),
            Rule("/rest/pug/compound/name", mode="add_headers", headers={"X-Throttling-Control": YELLOW}),
        ]
    )
    settings = get_settings()
    out = ingest_pubchem(
        settings,
        cids=[5564],
        names=["TiO2", "ethylene carbonate", "cerium oxide", "unobtainium"],
        day=date(2026, 11, 26),
    )
    assert (out["fetched"], out["new"], out["not_found"], out["quarantined"]) == (4, 4, 1, 0)
    assert out["not_found_names"] == ["unobtainium"]
    records = [json.loads(line) for line in open(out["records"])]
    by_cid = {r["cid"]: r for r in records}
    assert by_cid[5564]["smiles"].startswith("C1=CC(=C")  # served with the legacy SMILES keys
    assert by_cid[26042]["synonyms"] == ["TiO2"] and by_cid[26042]["formula"] == "O2Ti"
    assert "Molecular weight: 88.06 g/mol" in by_cid[7303]["text"]

    emb = get_embedder(settings.embedding_model)
    with MilvusStore.from_settings(settings) as store:
        hits = store.search_dense(
            emb.encode(["solvent in lithium-ion battery electrolytes"])[0],
            2,
            filter=store.filter_for(source="pubchem"),
        )
        assert hits[0].doc_id == "7303" and hits[0].url.endswith("/compound/7303")
        assert store.count("pubchem") == 4

    names_asked = sum(1 for _, path, _ in srv.requests if "/compound/name/" in path)
    again = ingest_pubchem(
        settings,
        cids=[5564],
        names=["TiO2", "ethylene carbonate", "cerium oxide", "unobtainium"],
        day=date(2026, 11, 26),
    )
    assert (again["new"], again["updated"], again["unchanged"], again["chunks_upserted"]) == (0, 0, 4, 0)
    # the cached names (found and not found) were not asked again
    assert sum(1 for _, path, _ in srv.requests if "/compound/name/" in path) == names_asked


def test_compounds_named_in_papers(pubchem, replay):
    from datetime import UTC, datetime

    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.ingestion.pubchem import ingest_pubchem

    pubchem()
    settings = get_settings()
    start, end = datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
    ingest_arxiv(settings, start, end, ["cond-mat.mtrl-sci", "physics.chem-ph"], dry_run=True)
    out = ingest_pubchem(settings, from_papers=(start, end), dry_run=True, day=start.date())
    cids = {json.loads(line)["cid"] for line in open(out["records"])}
    assert {26042, 14791} <= cids  # TiO2 (water on anatase) and CeO2 (Pt on ceria) from the fixture papers


def test_compound_ingestion_dag(airflow_db, pubchem):
    import pendulum
    from compound_ingestion import compound_ingestion_dag as dag

    pubchem()
    run = dag.test(
        logical_date=pendulum.datetime(2026, 11, 27, 3, tz="UTC"),
        run_conf={"names": ["water", "TiO2", "no such compound"], "cids": [2244], "watchlist": False},
    )
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {
        "select": "success",
        "fetch": "success",
        "stage": "success",
        "embed_and_upsert": "success",
    }
    with MilvusStore.from_settings(get_settings()) as store:
        assert store.stats()["sources"]["pubchem"]["documents"] == 3
    # filed under the run's logical day (a backfill lands in its interval), not the day the test runs
    days = {p.name for p in (get_settings().data_dir / "pubchem").iterdir()}
    assert days == {"2026-11-27"}
