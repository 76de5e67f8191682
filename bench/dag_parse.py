"""How long does each DAG file take to parse? (Measured here, not asserted in a test: CI machines are loaded.)

    .venv/bin/python bench/dag_parse.py [--repeats 5]

Each DAG file is imported in a fresh interpreter (Airflow's SDK and ``cbnano_common`` already imported, as the
DAG processor has them), ``--repeats`` times; prints one JSON line per file with the median and the slowest
parse in seconds, against Airflow's own limit (``core.dagbag_import_timeout``). The test tier checks only what
a parse imports (tests/dags/test_dag_integrity.py). Figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
PROBE = r"""
import importlib.util, sys, time
sys.path.insert(0, sys.argv[2])
import airflow.sdk
import cbnano_common
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("probe_dag", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(time.perf_counter() - t0)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    from airflow.configuration import conf

    limit = conf.getfloat("core", "dagbag_import_timeout")
    for path in sorted(p for p in DAGS.glob("*.py") if p.name != "cbnano_common.py"):
        times = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", PROBE, str(path), str(DAGS)],
                capture_output=True,
                text=True,
                check=True,
            )
            times.append(float(out.stdout.strip().splitlines()[-1]))
        print(
            json.dumps(
                {
                    "bench": "dag_parse",
                    "dag_file": path.name,
                    "median_s": round(statistics.median(times), 3),
                    "max_s": round(max(times), 3),
                    "airflow_limit_s": limit,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
