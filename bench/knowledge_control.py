"""Negative control: does the gate measure knowledge, or would a model that learnt only our format pass it?

    make demo    # once: ingests the samples and imports SmolLM2 (var/models/base/smollm2)
    .venv/bin/python bench/knowledge_control.py [--domain catalysis] [--month 2026-11] [--seeds 1 2 3]
                                                [--max-steps 8]

For each seed it trains two candidates on the CPU with SmolLM2-135M (profile ``cpu_lora``), from the same lake:

* **real**: the month's dataset as ``cbnano retrain`` builds it;
* **control**: the same rows with every fact's value moved to another document (a derangement within each
  kind: conductivities among conductivities, formulas among formulas), so the control sees the same format,
  questions, lengths and vocabulary, but the wrong value for every document.

All candidates are evaluated in one real evaluation (the base scored once, each adapter on it) on the real probe
(``probe.jsonl``: the true values) and each is judged by the real gate against the base. The gate must refuse the control in every seed. It prints one JSON line per
candidate: seed, kind, the ``knowledge_closed`` gain with its 95% interval and n (documents), and the decision;
the figures go to ``docs/BENCHMARKS.md`` whatever they are. A temporary model store keeps the lab's untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def control_rows(dataset: Path, out: Path, seed: int) -> dict[str, str]:
    """Write the control copy of ``dataset`` (train, text, val and probe files) into ``out``: each fact value
    of the trained rows replaced by another document's value of the same kind; returns the files."""
    from pipelines.lake import write_jsonl
    from pipelines.training.knowledge import Fact

    probe = [json.loads(x) for x in (dataset / "probe.jsonl").read_text().splitlines()]
    # the facts the probe asks about, by kind (the probe's choices are values of one kind)
    by_kind: dict[str, list[Fact]] = {}
    for it in probe:
        value = it["choices"][it["answer"]]
        kind = " ".join(sorted({c.split(" ", 1)[-1] for c in it["choices"]}))
        by_kind.setdefault(kind, []).append(Fact(it["doc"], "", "", value, kind, ""))
    swap: dict[tuple[str, str], str] = {}
    rng = random.Random(seed)
    for facts in by_kind.values():
        values = sorted({f.value for f in facts})
        if len(values) < 2:
            continue
        shuffled = values[:]
        while any(a == b for a, b in zip(values, shuffled, strict=True)):
            rng.shuffle(shuffled)
        moved = dict(zip(values, shuffled, strict=True))
        for f in facts:
            swap[(f.doc, f.value)] = moved[f.value]
    out.mkdir(parents=True, exist_ok=True)
    moved_to = {value: other for (_doc, value), other in swap.items()}
    # one pass, longest value first, so a value moved to B is never moved again (B back to A, say)
    pattern = re.compile("|".join(re.escape(v) for v in sorted(moved_to, key=len, reverse=True)))
    for name in ("train.jsonl", "train_text.jsonl"):
        rows = [
            json.loads(pattern.sub(lambda m: moved_to[m.group(0)], line))
            for line in (dataset / name).read_text().splitlines()
        ]
        write_jsonl(out / name, rows)
    for name in ("val.jsonl", "probe.jsonl"):
        shutil.copy(dataset / name, out / name)
    return {
        "train": str(out / "train.jsonl"),
        "train_text": str(out / "train_text.jsonl"),
        "validation": str(out / "val.jsonl"),
        "probe": str(out / "probe.jsonl"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="catalysis")
    ap.add_argument("--month", default="2026-11")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-steps", type=int, default=8)
    args = ap.parse_args(argv)

    from pipelines.evaluation.evaluate import evaluate_roles
    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN, decide
    from pipelines.settings import get_settings, reset_settings_cache
    from pipelines.training.retrain import StepClock, plan_run, prepare_dataset, train_candidate

    settings = get_settings()
    base_dir = settings.model_store / "base" / "smollm2"
    if not (base_dir / "config.json").is_file():
        print("run `make demo` first: it imports SmolLM2 into the model store", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cbnano-control-") as tmp:
        store_dir = Path(tmp) / "models"
        (store_dir / "base").mkdir(parents=True)
        (store_dir / "base" / "smollm2").symlink_to(base_dir)
        os.environ.update(CBNANO_MODEL_STORE=str(store_dir), CBNANO_BASE_MODEL="smollm2")
        reset_settings_cache()
        settings = get_settings()
        base, card = prepare_dataset(settings, args.domain, "cpu_lora", args.month)
        dataset = Path(card["files"]["train"]).parent
        print(
            json.dumps({"bench": "knowledge_control", "dataset": card["by_kind"], "probe": card["probe"]}),
            flush=True,
        )
        adapters: dict[str, Path] = {}
        timings: dict[str, dict[str, float]] = {}
        plans = {}
        for seed in args.seeds:
            control_card = {
                **card,
                "files": control_rows(dataset, Path(tmp) / f"control-{seed}", seed),
                "sha256": f"control{seed}-{card['sha256']}",
            }
            for kind, c in (("real", card), ("control", control_card)):
                clock = StepClock(lambda line: None)
                plan = plan_run(
                    settings,
                    domain=args.domain,
                    month=args.month,
                    profile="cpu_lora",
                    base=base,
                    card=c,  # type: ignore[arg-type]
                    max_steps=args.max_steps,
                    overrides={"seed": seed},
                )
                candidate = train_candidate(settings, plan, gpu=None, clock=clock)
                adapters[f"{kind}-{seed}"] = candidate.result.adapter_dir
                timings[f"{kind}-{seed}"] = clock.timings
                plans[f"{kind}-{seed}"] = plan
                print(json.dumps({"trained": f"{kind}-{seed}", "timings": clock.timings}), flush=True)
        # one evaluation: the base once, then every adapter on it, on the real probe and guards
        roles: dict[str, tuple[Path, Path | None]] = {"base": (base.path, None)}
        roles.update({name: (base.path, path) for name, path in adapters.items()})
        evaluation = evaluate_roles(
            settings,
            args.domain,
            roles,
            Path(card["files"]["validation"]),
            False,
            None,
            Path(tmp) / "eval_spec.json",
            probe=Path(card["files"]["probe"]),
        )
        for name in adapters:
            per_item = {
                m: {"base": r["base"], "candidate": r[name]} for m, r in evaluation["per_item"].items()
            }
            decision = decide(per_item, min_gain=DEFAULT_MIN_GAIN)
            head = decision.comparisons[0]
            kind, seed = name.split("-")
            print(
                json.dumps(
                    {
                        "bench": "knowledge_control",
                        "seed": int(seed),
                        "candidate": kind,
                        "metric": head.metric,
                        "gain": head.gain,
                        "ci": [head.ci_low, head.ci_high],
                        "n": head.n,
                        "unit": head.unit,
                        "mde": head.mde,
                        "published": decision.publish,
                        "reason": decision.reason,
                        "candidate_means": evaluation["metrics"][name],
                        "base_means": evaluation["metrics"]["base"],
                        "timings": timings[name],
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
