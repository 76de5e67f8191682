"""The platform's tools for ``+tools`` models: RDKit on a SMILES, a compound from the lake or from PubChem (the
replay server), the corpus search with its sources, and every failure as an answer the model reads."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from pipelines.gateway.tools import Toolbox, ToolError, pubchem_compound, rdkit_properties
from pipelines.ops.traces import Trace
from pipelines.settings import get_settings, reset_settings_cache

pytestmark = pytest.mark.unit
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def test_rdkit_properties_of_aspirin_and_a_clear_error_for_an_invalid_smiles():
    props = rdkit_properties("OC(=O)c1ccccc1OC(C)=O")  # aspirin, written another way
    assert props["canonical_smiles"] == ASPIRIN and props["formula"] == "C9H8O4"
    assert props["molecular_weight"] == pytest.approx(180.159, abs=0.01)  # PubChem: 180.16 g/mol
    assert props["tpsa"] == pytest.approx(63.6, abs=0.1) and props["logp"] == pytest.approx(1.31, abs=0.01)
    assert (props["h_bond_donors"], props["h_bond_acceptors"]) == (1, 4)
    assert props["lipinski"]["violations"] == 0
    big = rdkit_properties("C" * 40)  # tetracontane: heavy and greasy
    assert big["lipinski"]["weight_le_500"] is False and big["lipinski"]["logp_le_5"] is False
    for bad in ("C1CC(", "", 42):
        with pytest.raises(ToolError):
            rdkit_properties(bad)


def test_a_compound_comes_from_the_lake_first_then_from_pubchem(replay, fixtures_dir, monkeypatch):
    from fixture_lake import stage_fixtures

    srv = replay(pubchem_dir=fixtures_dir / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    reset_settings_cache()
    settings = get_settings()
    stage_fixtures(settings)
    water = pubchem_compound(settings, name="Water")
    assert (water["cid"], water["formula"], water["from"]) == (962, "H2O", "lake")
    assert water["url"] == "https://pubchem.ncbi.nlm.nih.gov/compound/962"
    aspirin = pubchem_compound(settings, cid=2244)  # not in the lake: PubChem (here, its replay)
    assert aspirin["from"] == "pubchem" and aspirin["formula"] == "C9H8O4"
    with pytest.raises(ToolError, match="no compound"):
        pubchem_compound(settings, cid=999_999_999)
    for args in ({}, {"cid": -3}, {"cid": True}, {"name": "  "}):
        with pytest.raises(ToolError):
            pubchem_compound(settings, **args)


@dataclass
class Hit:
    doc_id: str
    title: str
    url: str
    text: str


class Found:
    def __init__(self, results):
        self.results = results


class CorpusStandIn:
    def search(self, query):
        return Found(
            [Hit("2501.07731", "Black-phase CsPbI3", "https://arxiv.org/abs/2501.07731", "Ligands ...")]
        )


def test_the_toolbox_answers_every_call_and_keeps_spans_and_sources(cbnano_env):
    trace = Trace(user="alice", endpoint="chat", model="catalysis+tools", status=0, latency_ms=0)
    box = Toolbox(cbnano_env, CorpusStandIn, trace)
    found = box.run("search_corpus", json.dumps({"query": "CsPbI3 black phase", "top_k": 3}))
    assert found["results"][0]["source"] == 1 and box.sources[0]["doc_id"] == "2501.07731"
    assert box.run("rdkit_properties", json.dumps({"smiles": "C1CC("})) == {
        "error": "not a valid SMILES: 'C1CC('"
    }
    assert box.run("rdkit_properties", "{not json")["error"].startswith("the arguments are not JSON")
    assert "there is no tool 'rm_rf'" in box.run("rm_rf", "{}")["error"]
    assert [(s["name"], s["ok"]) for s in trace.spans] == [
        ("search_corpus", True),
        ("rdkit_properties", False),
        ("rdkit_properties", False),
        ("rm_rf", False),
    ]
