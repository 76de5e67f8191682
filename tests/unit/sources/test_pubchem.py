import json
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.replay import ReplayServer, Rule
from pipelines.sources.http import RetryPolicy, SourceError
from pipelines.sources.pubchem import (
    PubChemClient,
    PubChemThrottled,
    WindowLimiter,
    fault_of,
    parse_descriptions,
    parse_properties,
    parse_throttling,
)

pytestmark = pytest.mark.unit
GREEN = "Request Count status: Green (0%), Request Time status: Green (0%), Service status: Green (20%)"
YELLOW = "Request Count status: Yellow (60%), Request Time status: Green (10%), Service status: Green (20%)"
BLACK = "Request Count status: Black (100%), Request Time status: Red (90%), Service status: Busy (80%)"


def test_properties_current_and_legacy_keys(fixtures_dir):
    legacy = parse_properties(json.loads((fixtures_dir / "pubchem/cid_5564.property.json").read_text()))[0]
    current = parse_properties(json.loads((fixtures_dir / "pubchem/cid_7303.property.json").read_text()))[0]
    assert "CanonicalSMILES" not in legacy and "IsomericSMILES" not in legacy
    assert legacy["ConnectivitySMILES"] == legacy["SMILES"] == "C1=CC(=C(C=C1Cl)O)OC2=C(C=C(C=C2)Cl)Cl"
    assert current["SMILES"] == "C1COC(=O)O1" and current["MolecularWeight"] == pytest.approx(88.06)
    assert legacy["MolecularWeight"] == pytest.approx(289.5)  # PubChem sends it as a string


def test_both_smiles_key_sets_in_one_table_prefer_current():
    table = {
        "PropertyTable": {
            "Properties": [
                {"CID": 1, "CanonicalSMILES": "OLD", "ConnectivitySMILES": "NEW", "MolecularWeight": "1.5"}
            ]
        }
    }
    row = parse_properties(table)[0]
    assert row["ConnectivitySMILES"] == "NEW" and "CanonicalSMILES" not in row


def test_descriptions_title_record_then_descriptions():
    info = {
        "InformationList": {
            "Information": [
                {"CID": 7303, "Title": "Ethylene Carbonate"},
                {
                    "CID": 7303,
                    "Description": " A cyclic carbonate. ",
                    "DescriptionSourceName": "Src A",
                    "DescriptionURL": "https://a",
                },
                {
                    "CID": 7303,
                    "Description": "An electrolyte solvent.",
                    "DescriptionSourceName": "Src B",
                    "DescriptionURL": "https://b",
                },
                {"CID": 962, "Title": "Water"},
            ]
        }
    }
    out = parse_descriptions(info)
    assert out[7303]["title"] == "Ethylene Carbonate"
    assert out[7303]["descriptions"] == [
        ("A cyclic carbonate.", "Src A", "https://a"),
        ("An electrolyte solvent.", "Src B", "https://b"),
    ]
    assert out[962] == {"title": "Water", "descriptions": []}


def test_throttling_header():
    assert parse_throttling(GREEN) == {"request count": "green", "request time": "green", "service": "green"}
    assert parse_throttling(None) == {}


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_window_limiter_never_exceeds_any_window():
    clock = FakeClock()
    lim = WindowLimiter([(5, 1.0), (400, 60.0)], margin=0.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(900):
        lim.acquire()
        starts.append(clock.t)
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 1.0 - 1e-9
    for i in range(len(starts) - 400):
        assert starts[i + 400] - starts[i] >= 60.0 - 1e-9
    # 900 requests at 5/s would take 180 s; the 400/minute cap stretches it past two minutes
    assert starts[-1] >= 120.0


def _client(srv, **kw):
    return PubChemClient(
        srv.pubchem_url,
        limiter=WindowLimiter([(5, 1.0), (400, 60.0)]),
        retry=RetryPolicy(max_attempts=3, base_s=0.01, retry_statuses=frozenset({503, 504})),
        **kw,
    )


def test_rate_measured_at_a_recording_server(fixtures_dir):
    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem") as srv:
        client = _client(srv)
        for _ in range(17):
            client.cids_for_name("water")
        arrivals = list(srv.arrivals)
    assert len(arrivals) == 17
    assert all(arrivals[i + 5] - arrivals[i] >= 1.0 for i in range(len(arrivals) - 5)), arrivals
    assert arrivals[-1] - arrivals[0] < 3.6  # and it does run at the policy rate, not slower


def test_not_found_is_an_answer(fixtures_dir):
    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem") as srv:
        client = _client(srv)
        assert client.cids_for_name("unobtainium") == []
        assert client.properties([999999999]) == []
    assert len(srv.requests) == 2  # no retries


def test_fault_body_is_pubchems_shape(fixtures_dir):
    import requests

    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem") as srv:
        resp = requests.post(srv.pubchem_url + "/compound/name/cids/JSON", data={"name": "nope"}, timeout=5)
    assert resp.status_code == 404 and fault_of(resp)["Code"] == "PUGREST.NotFound"


@pytest.mark.parametrize("status", [503, 504])
def test_busy_answers_are_retried(fixtures_dir, status):
    html = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    with ReplayServer(
        pubchem_dir=fixtures_dir / "pubchem",
        rules=[
            Rule(
                "/rest/pug/compound/cid/property",
                status=status,
                body=html,
                headers={"Content-Type": "text/html"},
            )
        ],
    ) as srv:
        comps = _client(srv).compounds([962, 7303])
    assert sorted(c.cid for c in comps) == [962, 7303]
    assert [r[1].split("/")[4] for r in srv.requests].count("cid") == 3  # property twice, description once


def test_yellow_slows_down_and_green_restores(fixtures_dir):
    with ReplayServer(
        pubchem_dir=fixtures_dir / "pubchem",
        rules=[Rule("/rest/pug/compound/name", mode="add_headers", headers={"X-Throttling-Control": YELLOW})],
    ) as srv:
        client = _client(srv)
        client.cids_for_name("water")
        assert client.limiter.slowdown == 2.0 and client.throttle_events == ["yellow"]
        client.cids_for_name("water")
        assert client.limiter.slowdown == 1.0


def test_black_stops_with_a_clear_error(fixtures_dir):
    with ReplayServer(
        pubchem_dir=fixtures_dir / "pubchem",
        rules=[Rule("/rest/pug/", mode="add_headers", headers={"X-Throttling-Control": BLACK}, times=5)],
    ) as srv:
        with pytest.raises(PubChemThrottled, match="blocking requests"):
            _client(srv).cids_for_name("water")
    assert len(srv.requests) == 1


def test_other_faults_raise_with_code(fixtures_dir):
    body = json.dumps({"Fault": {"Code": "PUGREST.BadRequest", "Message": "Invalid CID"}}).encode()
    with ReplayServer(
        pubchem_dir=fixtures_dir / "pubchem",
        rules=[Rule("/rest/pug/compound/cid/property", status=400, body=body)],
    ) as srv:
        with pytest.raises(SourceError, match="PUGREST.BadRequest: Invalid CID"):
            _client(srv).properties([1])


def test_batching_keeps_requests_per_compound_low(fixtures_dir):
    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem") as srv:
        comps = _client(srv, batch_size=100).compounds([962, 7303, 26042, 5564, 14791, 2244])
    assert len(comps) == 6 and len(srv.requests) == 2


def test_name_cache_ttl(tmp_path):
    from pipelines.ingestion.pubchem import NEGATIVE_TTL_DAYS, NameCache

    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    cache = NameCache(tmp_path / "c.json", now=t0)
    cache.put("Unobtainium", [])
    cache.put("water", [962])
    cache.save()
    later = NameCache(tmp_path / "c.json", now=t0 + timedelta(days=NEGATIVE_TTL_DAYS - 1))
    assert later.get("unobtainium") == [] and later.get("WATER") == [962]
    expired = NameCache(tmp_path / "c.json", now=t0 + timedelta(days=NEGATIVE_TTL_DAYS + 1))
    assert expired.get("unobtainium") is None and expired.get("water") == [962]


def test_an_html_answer_to_a_name_lookup_is_one_error_naming_the_url(fixtures_dir):
    html = Rule(
        "/rest/pug/compound/name/cids/JSON",
        status=200,
        body=b"<html><body>Service busy</body></html>",
        headers={"Content-Type": "text/html"},
    )
    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem", rules=[html]) as srv:
        with pytest.raises(SourceError) as err:
            _client(srv).cids_for_name("aspirin")
    msg = str(err.value)
    assert "PubChem answered text/html, not JSON" in msg and "/compound/name/cids/JSON" in msg
    assert "Expecting value" not in msg


def test_malformed_answers_are_quarantined_not_fatal(tmp_path):
    from pipelines.ingestion.pubchem import stage_compounds

    raw = tmp_path / "run" / "raw"
    raw.mkdir(parents=True)
    props = {
        "PropertyTable": {
            "Properties": [
                {"CID": 2244, "Title": "Aspirin", "MolecularFormula": "C9H8O4", "MolecularWeight": "180.16"},
                {
                    "CID": 7303,
                    "Title": ["Ethylene carbonate", "EC"],
                    "MolecularFormula": "C3H4O3",
                },  # a list-typed Title
                {"Title": "no CID at all"},  # a missing key
                "a string where an object belongs",
                {"CID": "not a number", "Title": "x"},
            ]
        }
    }
    descs = {
        "InformationList": {
            "Information": [
                {"CID": 2244, "Title": "Aspirin"},
                {"CID": 2244, "Description": "An analgesic.", "DescriptionSourceName": "test"},
                {"CID": 2244, "Description": ["not", "text"]},
                {"Description": "a description without its CID"},
                "a string",
            ]
        }
    }
    (raw / "properties-0000.json").write_text(json.dumps(props))
    (raw / "descriptions-0000.json").write_text(json.dumps(descs))
    manifest = stage_compounds(
        {
            "dir": str(tmp_path / "run"),
            "pages": ["0000"],
            "resolved": {"aspirin": 2244},
            "requested": [2244, 7303],
            "not_found": [],
        }
    )
    records = [json.loads(line) for line in open(manifest["uri"])]
    assert [r["cid"] for r in records] == [2244]
    assert records[0]["descriptions"] == [["An analgesic.", "test", ""]]
    quarantine = [json.loads(line) for line in open(manifest["quarantine_uri"])]
    reasons = " | ".join(q["reason"] for q in quarantine)
    assert manifest["quarantined"] == 4, reasons
    assert "Title is a list, not text" in reasons and "has no CID" in reasons and "not an object" in reasons
    assert "CID 'not a number' is not a whole number" in reasons
    # a table that is not even a list: nothing to stage, no crash
    (raw / "properties-0000.json").write_text(json.dumps({"PropertyTable": {"Properties": "oops"}}))
    (raw / "descriptions-0000.json").write_text(json.dumps({"InformationList": "oops"}))
    empty = stage_compounds(
        {
            "dir": str(tmp_path / "run"),
            "pages": ["0000"],
            "resolved": {},
            "requested": [2244],
            "not_found": [],
        }
    )
    assert empty["rows"] == 0


def test_a_name_answer_of_another_shape_is_quarantined_not_cached(cbnano_env, fixtures_dir):
    """PubChem answers 200 with JSON that is not an IdentifierList: the name is neither found nor "not found";
    it is quarantined with the answer, not cached, and asked again on the next run."""
    from datetime import date

    from pipelines.ingestion.pubchem import NameCache, fetch_compounds, stage_compounds

    odd = Rule(
        "/rest/pug/compound/name/cids/JSON",
        body=b'{"Waiting": {"ListKey": "123", "Message": "your request is running"}}',
        headers={"Content-Type": "application/json"},
    )
    with ReplayServer(pubchem_dir=fixtures_dir / "pubchem", rules=[odd]) as srv:
        fetched = fetch_compounds(cbnano_env, names=["TiO2"], day=date(2026, 11, 26), client=_client(srv))
        assert fetched["not_found"] == [] and list(fetched["unreadable_names"]) == ["TiO2"]
        staged = stage_compounds(fetched)
        assert (staged["quarantined"], staged["not_found"], staged["rows"]) == (1, 0, 0)
        held = [json.loads(x) for x in open(staged["quarantine_uri"])]
        assert held[0]["name"] == "TiO2" and "ListKey" in held[0]["raw"]
        assert NameCache(cbnano_env.home / "pubchem" / "name_cache.json").get("TiO2") is None
        again = fetch_compounds(cbnano_env, names=["TiO2"], day=date(2026, 11, 26), client=_client(srv))
    assert again["resolved"] == {"TiO2": 26042} and again["unreadable_names"] == {}
