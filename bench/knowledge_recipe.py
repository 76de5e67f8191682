"""Which recipe injects the month's facts? Real and format-only control candidates over a small grid.

    make demo    # once: ingests the samples and imports SmolLM2 (var/models/base/smollm2)
    .venv/bin/python bench/knowledge_recipe.py [--domain catalysis] [--month 2026-11] [--seed 1] \
        [--grid '[{"num_epochs": 2}, {"num_epochs": 4, "learning_rate": 0.0005}]']

Each grid point is a set of axolotl keys laid over the ``cpu_lora`` profile (epochs, learning rate, LoRA rank,
``lora_target_modules``, ``sample_packing``...). For each point it trains the **real** candidate (the month's
dataset) and its **control** (the same rows with every fact's value moved to another document,
``knowledge_control.control_rows``), then scores all of them in one evaluation and prints, per point, the
paired closed-book p(correct) gain of each against the base and the real-minus-control difference: a recipe
that teaches facts moves the real candidate up and the control down; one that teaches format moves both alike.
Figures go to docs/BENCHMARKS.md. Only the point ``{"num_epochs": 2}`` has been measured so far (on the rows
before they became chat turns); the default grid is the next one to run: fewer exposures, a lower rate, packing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_GRID: list[dict[str, Any]] = [
    {"num_epochs": 1},
    {"num_epochs": 2, "learning_rate": 0.0003},
    {"num_epochs": 2, "sample_packing": True, "pad_to_sequence_len": True, "micro_batch_size": 1},
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="catalysis")
    ap.add_argument("--month", default="2026-11")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grid", type=json.loads, default=DEFAULT_GRID, help="JSON list of override objects")
    ap.add_argument("--no-control", action="store_true", help="train the real candidates only")
    args = ap.parse_args(argv)

    from knowledge_control import control_card, isolated_store, judge_all, train_all

    from pipelines.training.request import resolve_request
    from pipelines.training.retrain import prepare_dataset

    t0 = time.perf_counter()
    with isolated_store() as (settings, tmp):
        request = resolve_request(settings, args.domain, profile="cpu_lora", month=args.month)
        prepared = prepare_dataset(settings, request)
        base, card = prepared.base, prepared.card
        control = control_card(dict(card), tmp, args.seed)
        runs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for i, point in enumerate(args.grid):
            runs[f"real-{i}"] = (card, {"seed": args.seed, **point})
            if not args.no_control:
                runs[f"control-{i}"] = (control, {"seed": args.seed, **point})
        adapters, timings = train_all(settings, request, prepared, runs)
        records = {
            r["candidate"]: r for r in judge_all(settings, args.domain, base, dict(card), adapters, tmp)
        }
        for i, point in enumerate(args.grid):
            real, ctrl = records[f"real-{i}"], records.get(f"control-{i}")
            row = {
                "bench": "knowledge_recipe",
                "point": point,
                "real_gain": real["gain"],
                "real_ci": real["ci"],
                "control_gain": ctrl["gain"] if ctrl else None,
                "real_minus_control": round(real["gain"] - ctrl["gain"], 4) if ctrl else None,
                "real_published": real["published"],
                "real_refused_by": real["refused_by"],
                "guards": real["guards"],
                "train_s": timings[f"real-{i}"].get("train"),
                "n": real["n"],
            }
            print(json.dumps(row), flush=True)
    print(json.dumps({"bench": "knowledge_recipe", "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
