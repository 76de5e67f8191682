"""Benchmark: PubChem compound ingestion at the usage-policy limit, and requests per compound.

    .venv/bin/python bench/pubchem.py [--compounds 300]

Serves N synthetic compounds in PubChem's formats (PropertyTable / InformationList / IdentifierList) from the
local replay server and runs the real client with the real policy limiter (5 requests/s, 400/min) on a mix
that looks like a nightly run: every compound asked for by name (one name -> CID request each, PubChem has
no batch name lookup), then properties and descriptions in batches of 100. The server answers in well
under a millisecond, so the rate is set by the policy, which is the point: it should sit close to 5
requests/s of useful work. Prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path


def write_corpus(root: Path, n: int) -> list[str]:
    names: dict[str, list[int]] = {}
    for i in range(n):
        cid = 100000 + i
        name = f"benchmarkium compound {i}"
        row = {
            "CID": cid,
            "MolecularFormula": f"C{i % 20 + 1}H{i % 30 + 2}O{i % 5}",
            "MolecularWeight": f"{100 + i * 0.37:.2f}",
            "SMILES": "C" * (i % 12 + 1),
            "ConnectivitySMILES": "C" * (i % 12 + 1),
            "InChIKey": f"BENCH{i:09d}-UHFFFAOYSA-N",
            "IUPACName": f"benchmark-{i}-ol",
            "Title": name.title(),
        }
        (root / f"cid_{cid}.property.json").write_text(json.dumps({"PropertyTable": {"Properties": [row]}}))
        (root / f"cid_{cid}.description.json").write_text(
            json.dumps(
                {
                    "InformationList": {
                        "Information": [
                            {"CID": cid, "Title": name.title()},
                            {
                                "CID": cid,
                                "Description": f"Synthetic compound {i} for the ingestion benchmark.",
                                "DescriptionSourceName": "CB Nano benchmark",
                                "DescriptionURL": "",
                            },
                        ]
                    }
                }
            )
        )
        names[name] = [cid]
    (root / "names.json").write_text(json.dumps(names))
    return list(names)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compounds", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cbnano-bench-pubchem-"))
    (tmp / "pc").mkdir()
    names = write_corpus(tmp / "pc", args.compounds)
    os.environ.update(CBNANO_HOME=str(tmp / "home"))

    from pipelines.ingestion.pubchem import fetch_compounds, stage_compounds
    from pipelines.replay import ReplayServer
    from pipelines.settings import get_settings
    from pipelines.sources.pubchem import PubChemClient

    with ReplayServer(pubchem_dir=tmp / "pc") as srv:
        settings = get_settings()
        client = PubChemClient(srv.pubchem_url)  # the process-wide policy limiter
        t0 = time.perf_counter()
        fetched = fetch_compounds(settings, names=names, client=client, day=date(2026, 11, 26))
        staged = stage_compounds(fetched)
        took = time.perf_counter() - t0
        arrivals = list(srv.arrivals)
    n_req = len(arrivals)
    worst_1s = max(sum(1 for t in arrivals if a <= t < a + 1.0) for a in arrivals)
    worst_60s = max(sum(1 for t in arrivals if a <= t < a + 60.0) for a in arrivals)
    result = {
        "bench": "pubchem",
        "compounds": staged["rows"],
        "seconds": round(took, 1),
        "compounds_per_s": round(staged["rows"] / took, 2),
        "requests": n_req,
        "requests_per_s": round(n_req / took, 2),
        "requests_per_compound": round(n_req / staged["rows"], 3),
        "max_requests_in_any_1s": worst_1s,
        "max_requests_in_any_60s": worst_60s,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
