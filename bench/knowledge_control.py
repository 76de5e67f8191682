"""Controls: does the gate pass a model that learnt the month, and refuse one that learnt only our format or
one that was damaged?

    make demo    # once: ingests the samples and imports SmolLM2 (var/models/base/smollm2)
    .venv/bin/python bench/knowledge_control.py [--domain catalysis] [--month 2026-11] [--seeds 1 2 3]
                                                [--max-steps N] [--damage-lr 0.02] [--kinds real control damage]
                                                [--also-scale 1 0.75]

For each seed it trains three candidates on the CPU with SmolLM2-135M (profile ``cpu_lora`` at its defaults
unless ``--max-steps``), from the same lake:

* **real**: the month's dataset as ``cbnano retrain`` builds it;
* **control**: the same rows with every fact's value moved to another document (a derangement within each
  kind: conductivities among conductivities, formulas among formulas), so the control sees the same format,
  questions, lengths and vocabulary, but the wrong value for every document;
* **damage**: the real rows at a destructive learning rate (``--damage-lr``, 0.02 by default: about 13x the
  profile's 1.5e-3): it sees the month's facts, so it may well gain on the probe, and the forgetting guards
  must refuse it.

Each candidate keeps the profile's share of its trained delta (``cbnano.adapter_scale``), as ``cbnano retrain``
does; ``--also-scale`` judges the same trainings at other shares too (``realx1-2``: seed 2's real candidate as
axolotl trained it), at the price of one more evaluated model each and no more training.

All candidates are evaluated in one real evaluation (the base scored once, each adapter on it) on the real probe
(``probe.jsonl``: the true values) and each is judged by the real gate against the base. The gate must pass the real candidate and refuse both controls in
every seed. It prints one JSON line per candidate: seed, kind, the primary gain with its 95% interval and n
(documents), every guard's interval, which checks refused it, the decision and the training time;
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

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


@contextmanager
def isolated_store() -> Iterator[tuple[Any, Path]]:
    """(settings, temporary folder) with a temporary model store holding only the imported SmolLM2 base, so
    the lab's store is untouched; raises SystemExit when `make demo` has not imported it yet."""
    from pipelines.settings import get_settings, reset_settings_cache

    base_dir = get_settings().model_store / "base" / "smollm2"
    if not (base_dir / "config.json").is_file():
        raise SystemExit("run `make demo` first: it imports SmolLM2 into the model store")
    with tempfile.TemporaryDirectory(prefix="cbnano-control-") as tmp:
        store_dir = Path(tmp) / "models"
        (store_dir / "base").mkdir(parents=True)
        (store_dir / "base" / "smollm2").symlink_to(base_dir)
        os.environ.update(CBNANO_MODEL_STORE=str(store_dir), CBNANO_BASE_MODEL="smollm2")
        reset_settings_cache()
        yield get_settings(), Path(tmp)


def control_card(card: dict[str, Any], tmp: Path, seed: int) -> dict[str, Any]:
    """The format-only control's dataset card: the real card with the values moved (:func:`control_rows`)."""
    dataset = Path(card["files"]["train"]).parent
    return {
        **card,
        "files": control_rows(dataset, tmp / f"control-{seed}", seed),
        "sha256": f"control{seed}-{card['sha256']}",
    }


def train_all(
    settings: Any,
    request: Any,
    prepared: Any,
    runs: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    """Train each run (name → (dataset card, config overrides)) with the ``cpu_lora`` profile; returns
    (name → adapter folder, name → step timings), printing one JSON line per run and progress to stderr."""
    from dataclasses import replace

    from pipelines.training.retrain import StepClock, plan_run, train_candidate
    from pipelines.training.runner import progress_printer

    adapters: dict[str, Path] = {}
    timings: dict[str, dict[str, float]] = {}
    for name, (card, overrides) in runs.items():
        show = progress_printer(lambda line, n=name: print(f"  {n} {line}", file=sys.stderr, flush=True), 60)
        clock = StepClock(show)
        plan = plan_run(settings, replace(request, overrides=overrides), replace(prepared, card=card))
        candidate = train_candidate(settings, plan, gpu=None, clock=clock)
        adapters[name] = candidate.result.adapter_dir
        timings[name] = {**clock.timings, **candidate.result.stats}
        print(json.dumps({"trained": name, "overrides": overrides, "timings": timings[name]}), flush=True)
    return adapters, timings


def also_scaled(settings: Any, adapter: Path, into: Path, scale: float) -> Path:
    """The trained adapter behind ``adapter`` (axolotl's ``out/`` of its run) with ``scale`` of its delta."""
    from pipelines.training.runner import interpolate

    trained = adapter.parent / "out" if adapter.name == "adapter" else adapter
    if scale == 1.0:
        return trained
    interpolate(trained, into, scale, settings.train_python)
    return into


def judge_all(
    settings: Any,
    domain: str,
    base: Any,
    card: dict[str, Any],
    adapters: dict[str, Path],
    tmp: Path,
    save: Path | None = None,
) -> list[dict[str, Any]]:
    """Evaluate the base once and every adapter on it (the real probe and guards), and judge each with the real
    gate against the base; returns one record per adapter (primary gain and interval, each guard, which
    checks refused it, the decision)."""
    from pipelines.evaluation.evaluate import evaluate_roles
    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN, decide

    roles: dict[str, tuple[Path, Path | None]] = {"base": (base.path, None)}
    roles.update({name: (base.path, path) for name, path in adapters.items()})
    evaluation = evaluate_roles(
        settings,
        domain,
        roles,
        Path(card["files"]["validation"]),
        False,
        None,
        tmp / "eval_spec.json",
        probe=Path(card["files"]["probe"]),
        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    if save is not None:  # every role's per-item scores: the gate can be re-applied to them (bench/regate.py)
        save.write_text(json.dumps(evaluation["per_item"]))
    out = []
    for name in adapters:
        per_item = {m: {"base": r["base"], "candidate": r[name]} for m, r in evaluation["per_item"].items()}
        decision = decide(per_item, min_gain=DEFAULT_MIN_GAIN)
        head = decision.comparisons[0]
        out.append(
            {
                "candidate": name,
                "metric": head.metric,
                "gain": head.gain,
                "ci": [head.ci_low, head.ci_high],
                "n": head.n,
                "unit": head.unit,
                "mde": head.mde,
                "published": decision.publish,
                "refused_by": decision.refused_by,
                "guards": {
                    c.metric: {"gain": c.gain, "ci": [c.ci_low, c.ci_high], "n": c.n}
                    for c in decision.comparisons[1:]
                },
                "reason": decision.reason,
                "candidate_means": evaluation["metrics"][name],
                "base_means": evaluation["metrics"]["base"],
                "eval_seconds": evaluation.get("seconds"),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="catalysis")
    ap.add_argument("--month", default="2026-11")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument(
        "--max-steps", type=int, default=None, help="cap on steps (default: the profile's epochs)"
    )
    ap.add_argument("--damage-lr", type=float, default=0.02, help="learning rate of the damage control")
    ap.add_argument("--epochs", type=float, help="num_epochs for every candidate (default: the profile's)")
    ap.add_argument("--kinds", nargs="+", default=["real", "control", "damage"])
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=YAML",
        help="recipe keys for every candidate, e.g. lora_target_linear=false "
        "'lora_target_modules=[gate_proj, up_proj, down_proj]'",
    )
    ap.add_argument(
        "--also-scale",
        type=float,
        nargs="+",
        default=[],
        metavar="S",
        help="judge each trained candidate also at these shares of its trained delta (1 = as axolotl trained "
        "it), beside the profile's cbnano.adapter_scale; named e.g. realx0.8-1",
    )
    ap.add_argument("--save-eval", type=Path, help="write every role's per-item scores here (JSON)")
    ap.add_argument(
        "--judge",
        nargs="+",
        metavar="KIND-SEED=ADAPTER",
        help="judge adapters trained before (e.g. real-1=var/runs/<run>/out) instead of training",
    )
    args = ap.parse_args(argv)
    judged = dict(j.split("=", 1) for j in args.judge or [])
    if any("=" not in kv for kv in args.set):
        ap.error("--set takes KEY=YAML, e.g. learning_rate=0.0003")
    recipe = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if any(len(name.split("-")) != 2 for name in judged):
        ap.error("--judge takes KIND-SEED=ADAPTER, e.g. real-1=var/runs/<run>/out")

    from pipelines.training.request import resolve_request
    from pipelines.training.retrain import prepare_dataset

    t0 = time.perf_counter()
    with isolated_store() as (settings, tmp):
        request = resolve_request(
            settings, args.domain, profile="cpu_lora", month=args.month, max_steps=args.max_steps
        )
        prepared = prepare_dataset(settings, request)
        base, card = prepared.base, prepared.card
        print(
            json.dumps({"bench": "knowledge_control", "dataset": card["by_kind"], "probe": card["probe"]}),
            flush=True,
        )
        runs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for seed in [] if judged else args.seeds:
            keys: dict[str, Any] = {
                "seed": seed,
                **recipe,
                **({"num_epochs": args.epochs} if args.epochs else {}),
            }
            made = {
                "real": (card, keys),
                "control": (control_card(dict(card), tmp, seed), keys),
                "damage": (card, {**keys, "learning_rate": args.damage_lr}),
            }
            runs.update({f"{kind}-{seed}": made[kind] for kind in args.kinds})
        adapters, timings = train_all(settings, request, prepared, runs)
        for name, path in list(adapters.items()):  # the same training, other shares of its delta
            kind, seed = name.split("-")
            for scale in args.also_scale:
                other = f"{kind}x{scale:g}-{seed}"
                adapters[other] = also_scaled(settings, path, tmp / other, scale)
                timings[other] = timings[name]
        adapters.update({name: Path(path) for name, path in judged.items()})
        timings.update({name: {} for name in judged})
        for record in judge_all(settings, args.domain, base, dict(card), adapters, tmp, args.save_eval):
            kind, seed = record["candidate"].split("-")
            record.update(
                bench="knowledge_control", kind=kind, seed=int(seed), timings=timings[record["candidate"]]
            )
            print(json.dumps(record), flush=True)
    print(
        json.dumps({"bench": "knowledge_control", "wall_s": round(time.perf_counter() - t0, 1)}), flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
