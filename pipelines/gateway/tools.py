"""The platform's own tools, which the gateway runs for ``<model>+tools`` ids: the model asks (OpenAI tool
calls), the gateway runs the tool and answers with a ``tool`` message, until the model answers in words.

* ``search_corpus {query, top_k?}``: the platform's hybrid search over the ingested papers and compounds;
* ``pubchem_compound {name | cid}``: a compound from the lake (what ingestion staged) first, PubChem itself
  (the polite client, ``CBNANO_PUBCHEM_URL``) second;
* ``rdkit_properties {smiles}``: RDKit on the SMILES: canonical SMILES, formula, molecular weight, Crippen
  logP, TPSA, H-bond donors and acceptors, rotatable bonds, and Lipinski's rule-of-five flags.

The loop is bounded: at most ``MAX_STEPS`` rounds of tool calls and ``MAX_SECONDS`` in all, after which the
model is asked to answer without tools. A tool's failure (an invalid SMILES, an unknown compound, PubChem
down) goes back to the model as the tool's answer ``{"error": ...}``, never as a failed request; each call is a
span of the request's trace. The answer carries the ``sources`` the tools used (papers found, PubChem pages).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from pipelines.gateway.shapes import TOOLS, GatewayError, SourceRef, first_choice
from pipelines.lake import staged_records
from pipelines.ops.traces import Span, Trace
from pipelines.retrieval.search import SearchError, parse_query
from pipelines.settings import Settings

MAX_STEPS = 4
MAX_SECONDS = 120.0
PUBCHEM_PAGE = "https://pubchem.ncbi.nlm.nih.gov/compound/{cid}"


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


SPECS = [
    _function(
        "search_corpus",
        "Search the lab's corpus of papers and compounds; returns the best passages with their sources.",
        {"query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1, "maximum": 10}},
        ["query"],
    ),
    _function(
        "pubchem_compound",
        "Look up a compound by name or PubChem CID: formula, weight, SMILES, InChIKey, XLogP, description.",
        {"name": {"type": "string"}, "cid": {"type": "integer"}},
        [],
    ),
    _function(
        "rdkit_properties",
        "Compute properties of a molecule from its SMILES with RDKit (formula, weight, logP, TPSA, H-bond "
        "donors/acceptors, rotatable bonds, Lipinski's rule of five).",
        {"smiles": {"type": "string"}},
        ["smiles"],
    ),
]


class ToolError(Exception):
    """What the model is told when a tool cannot answer (its arguments, or the world)."""


def rdkit_properties(smiles: Any) -> dict[str, Any]:
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdMolDescriptors

    if not isinstance(smiles, str) or not smiles.strip() or len(smiles) > 2000:
        raise ToolError("smiles must be a SMILES string of at most 2000 characters")
    rdBase.DisableLog("rdApp.*")  # RDKit's parse errors go to the model, not to the gateway's log
    mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        raise ToolError(f"not a valid SMILES: {smiles.strip()[:200]!r}")
    weight = _average_weight(mol)
    logp = rdMolDescriptors.CalcCrippenDescriptors(mol)[0]
    # Lipinski's own counts: donors are N-H and O-H, acceptors every N and O
    donors, acceptors = rdMolDescriptors.CalcNumLipinskiHBD(mol), rdMolDescriptors.CalcNumLipinskiHBA(mol)
    rules = {
        "weight_le_500": weight <= 500,
        "logp_le_5": logp <= 5,
        "h_donors_le_5": donors <= 5,
        "h_acceptors_le_10": acceptors <= 10,
    }
    return {
        "canonical_smiles": Chem.MolToSmiles(mol),
        "formula": rdMolDescriptors.CalcMolFormula(mol),
        "molecular_weight": round(weight, 3),
        "logp": round(logp, 3),
        "tpsa": round(rdMolDescriptors.CalcTPSA(mol), 2),
        "h_bond_donors": donors,
        "h_bond_acceptors": acceptors,
        "rotatable_bonds": rdMolDescriptors.CalcNumRotatableBonds(mol),
        "lipinski": {**rules, "violations": sum(not ok for ok in rules.values())},
    }


def _average_weight(mol: Any) -> float:
    """The molecular weight (g/mol, standard atomic weights), hydrogens included."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    hydrogen = table.GetAtomicWeight(1)
    return float(
        sum(table.GetAtomicWeight(a.GetAtomicNum()) + a.GetTotalNumHs() * hydrogen for a in mol.GetAtoms())
    )


def _compound_answer(rec: dict[str, Any], where: str) -> dict[str, Any]:
    descriptions = rec.get("descriptions") or []
    return {
        "cid": rec.get("cid"),
        "title": rec.get("title", ""),
        "formula": rec.get("formula", ""),
        "molecular_weight": rec.get("weight"),
        "iupac_name": rec.get("iupac_name", ""),
        "smiles": rec.get("smiles", ""),
        "inchikey": rec.get("inchikey", ""),
        "xlogp": rec.get("xlogp"),
        "description": descriptions[0][0] if descriptions else "",
        "from": where,
        "url": PUBCHEM_PAGE.format(cid=rec.get("cid")),
    }


def pubchem_compound(settings: Settings, name: Any = None, cid: Any = None) -> dict[str, Any]:
    if cid is None and not (isinstance(name, str) and name.strip()):
        raise ToolError("give a compound's name or its PubChem cid")
    if cid is not None and (isinstance(cid, bool) or not isinstance(cid, int) or cid < 1):
        raise ToolError(f"cid must be a positive whole number, not {cid!r}")
    wanted = name.strip().lower() if isinstance(name, str) else ""
    found = None
    for run in staged_records(settings.data_dir, ["pubchem"]):  # oldest first: the newest record wins
        for rec in run.records():
            names = {str(rec.get("title", "")).lower(), *(str(s).lower() for s in rec.get("synonyms") or [])}
            if (cid is not None and rec.get("cid") == cid) or (wanted and wanted in names):
                found = rec
    if found is not None:
        return _compound_answer(found, "lake")
    from pipelines.sources.http import SourceError
    from pipelines.sources.pubchem import PubChemClient

    try:
        client = PubChemClient.from_settings(settings)
        cids = [cid] if cid is not None else client.cids_for_name(wanted)
        compounds = client.compounds(cids[:1]) if cids else []
    except (SourceError, ValueError, OSError) as exc:
        raise ToolError(f"PubChem did not answer: {exc}") from None
    if not compounds:
        raise ToolError(f"PubChem has no compound {name or cid!r}")
    return _compound_answer(dict(compounds[0].to_dict()), "pubchem")


class Toolbox:
    """Runs the platform's tools for one request and keeps the sources they used."""

    def __init__(self, settings: Settings, searcher: Callable[[], Any], trace: Trace) -> None:
        self.settings = settings
        self.searcher = searcher
        self.trace = trace
        self.sources: list[SourceRef] = []

    def _source(self, doc_id: str, title: str, url: str) -> int:
        for s in self.sources:
            if s["doc_id"] == doc_id:
                return s["n"]
        self.sources.append(SourceRef(n=len(self.sources) + 1, doc_id=doc_id, title=title, url=url))
        return len(self.sources)

    def _search(self, query: Any, top_k: Any = 5) -> dict[str, Any]:
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query must be a non-empty string")
        k = top_k if isinstance(top_k, int) and not isinstance(top_k, bool) and 1 <= top_k <= 10 else 5
        try:
            results = self.searcher().search(parse_query(query[:2000], top_k=k)).results
        except SearchError as exc:
            raise ToolError(str(exc)) from None
        return {
            "results": [
                {"source": self._source(r.doc_id, r.title, r.url), "title": r.title, "text": r.text[:1200]}
                for r in results
            ]
        }

    def run(self, name: str, raw_arguments: str) -> dict[str, Any]:
        """One tool call's answer for the model: the tool's result, or ``{"error": ...}``."""
        t0 = time.perf_counter()
        error: str | None = None
        try:
            args = json.loads(raw_arguments or "{}")
            if not isinstance(args, dict):
                raise ToolError("the arguments must be a JSON object")
            if name == "search_corpus":
                out = self._search(args.get("query"), args.get("top_k", 5))
            elif name == "pubchem_compound":
                out = pubchem_compound(self.settings, args.get("name"), args.get("cid"))
                out["source"] = self._source(f"CID:{out['cid']}", str(out["title"]), str(out["url"]))
            elif name == "rdkit_properties":
                out = rdkit_properties(args.get("smiles"))
            else:
                raise ToolError(
                    f"there is no tool {name!r} (tools: {', '.join(s['function']['name'] for s in SPECS)})"
                )
        except (ToolError, ValueError) as exc:
            error = str(exc) if isinstance(exc, ToolError) else f"the arguments are not JSON: {exc}"
            out = {"error": error}
        except Exception as exc:  # noqa: BLE001 - the model hears of it; the request goes on
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
            out = {"error": f"the tool failed: {error}"}
        self.trace.spans.append(
            Span(name=name[:64], arguments=(raw_arguments or "")[:2000], ok=error is None,
                 latency_ms=round((time.perf_counter() - t0) * 1000, 2), error=error)
        )  # fmt: skip
        return out


async def run_with_tools(
    post: Callable[[dict[str, Any]], Any], upstream: dict[str, Any], toolbox: Toolbox
) -> dict[str, Any]:
    """Ask System A (``post``) with the platform's tools until it answers without calling one (at most
    ``MAX_STEPS`` rounds and ``MAX_SECONDS``; then once more with ``tool_choice: none``)."""
    if upstream.get("tools"):
        raise GatewayError(
            400, f"a {TOOLS} model brings its own tools: leave 'tools' out, or use the plain model"
        )
    messages = list(upstream["messages"])
    deadline = time.monotonic() + MAX_SECONDS
    for _ in range(MAX_STEPS):
        out = await post({**upstream, "messages": messages, "tools": SPECS, "tool_choice": "auto"})
        message = _first_message(out)
        calls = message.get("tool_calls") or []
        if not calls:
            return dict(out)
        messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
        for call in calls:
            fn = call.get("function") or {}
            answer = await run_in_threadpool(
                toolbox.run, str(fn.get("name", "")), str(fn.get("arguments", ""))
            )
            messages.append(
                {"role": "tool", "tool_call_id": call.get("id", ""), "content": json.dumps(answer)}
            )
        if time.monotonic() > deadline:
            break
    return dict(await post({**upstream, "messages": messages, "tools": SPECS, "tool_choice": "none"}))


def _first_message(out: dict[str, Any]) -> dict[str, Any]:
    message = first_choice(out).get("message")
    return message if isinstance(message, dict) else {}
