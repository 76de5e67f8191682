"""GPU check: the real retraining chain with `gpu_qlora` on a random-init model of a real shape.

    .venv/bin/python bench/gpu_retrain.py --shape 1.7b --shape 8b          # on System B (or any CUDA machine)
    .venv/bin/python bench/gpu_retrain.py --smoke                          # CPU smoke run (make test runs it)

For each shape (SmolLM2-1.7B's, Llama-3-8B's; see pipelines/training/tiny.py SHAPES) it builds a random-init
model around the imported SmolLM2 tokenizer (`cbnano models import-base smollm2` first, or it imports it),
registers it as a base in the model store, writes a synthetic lab drop of catalyst test results for the domain,
stages the bundled sample papers and compounds of November 2026 (the knowledge probe asks about their facts),
and runs `pipelines.training.retrain.retrain` — the function `cbnano retrain` and the DAG call — on the GPU:
dataset, config validation, QLoRA training, merge, merge check, evaluation of base and candidate per item,
gate, registration as a version. It prints one JSON line per shape with training tokens/s, s/step and peak
GPU memory (axolotl's own counters), evaluation seconds and peak GPU memory, and the wall time of every step.

The random weights make the gate's verdict meaningless (and such a base is a test model, never production);
the figures are what the check is for. `--smoke` runs the same chain on the CPU with a ~1M-parameter shape,
two steps and the CUDA-only knobs (bf16, tf32, fused LoRA kernels, 8-bit AdamW) switched off: it proves the
path, not the speed. Settings come from the environment as usual (`CBNANO_HOME`, `CBNANO_MODEL_STORE`,
`CBNANO_TRAIN_PYTHON`); on a GPU machine without network see ../shared/gpu/README.md for the wheels.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CPU_SMOKE = {
    "bf16": False,
    "tf32": False,
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "optimizer": "adamw_torch",
    "gradient_checkpointing": False,
    "sequence_len": 512,
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "save_steps": 1000,
    "logging_steps": 1,
}


def lab_drop(path: Path, docs: int, seed: int = 0) -> None:
    """Synthetic catalyst test results, two phrasings per batch (one document each)."""
    rng = random.Random(seed)
    metals, supports = (
        ["Pt", "Pd", "Rh", "Ni", "Cu", "Co", "Ru", "Ag"],
        ["CeO2", "Al2O3", "TiO2", "ZrO2", "SiO2"],
    )
    lines = []
    for i in range(docs):
        m, s, load, t50 = (
            rng.choice(metals),
            rng.choice(supports),
            rng.choice([0.5, 1, 2, 5]),
            rng.randint(120, 480),
        )
        batch = f"BENCH-{i:05d}"
        lines.append(
            {
                "doc": batch,
                "instruction": f"At what temperature did batch {batch} reach 50% CO conversion?",
                "output": f"Batch {batch} ({load:g} wt% {m} on {s}) reached 50% CO conversion at {t50} °C, "
                f"measured in 1% CO / 10% O2 at a space velocity of 60,000 h-1.",
            }
        )
        lines.append(
            {
                "doc": batch,
                "instruction": f"What is the composition of catalyst batch {batch}?",
                "output": f"Batch {batch} is {load:g} wt% {m} supported on {s}, calcined at 500 °C.",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")


SAMPLE_MONTH = "2026-11"


def stage_samples(settings: Any) -> None:
    """Stage the bundled sample papers and compounds (November 2026) into the lake, without indexing: the
    month's dataset needs documents whose facts the knowledge probe can ask about, beside the lab drop."""
    import dataclasses
    from datetime import UTC, date, datetime

    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.ingestion.pubchem import ingest_pubchem
    from pipelines.replay import ReplayServer
    from pipelines.sources.arxiv import DEFAULT_CATEGORIES

    root = Path(__file__).resolve().parents[1] / "include" / "samples"
    with ReplayServer(corpus=[root / "arxiv"], pubchem_dir=root / "pubchem") as srv:
        local = dataclasses.replace(
            settings, arxiv_api_url=srv.arxiv_api_url, pubchem_url=srv.pubchem_url, arxiv_delay_s=0.0
        )
        start, end = datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
        ingest_arxiv(local, start, end, DEFAULT_CATEGORIES, dry_run=True)
        ingest_pubchem(local, watchlist=True, from_papers=(start, end), dry_run=True, day=date(2026, 11, 23))


def run_shape(shape: str, domain: str, steps: int, gpu: int | None, smoke: bool, verbose: bool) -> dict:
    """Build the base, run the chain, return the figures."""
    from pipelines.settings import get_settings
    from pipelines.trainenv import run_step
    from pipelines.training.base_models import import_smollm2
    from pipelines.training.request import resolve_request
    from pipelines.training.retrain import retrain

    settings = get_settings()
    t0 = time.perf_counter()
    import_smollm2(settings.model_store, settings.train_python)
    name = f"random-{shape}"
    base = settings.model_store / "base" / name
    if not (base / "config.json").is_file():
        run_step(
            settings.train_python,
            "build_base",
            [
                "--shape",
                shape,
                "--tokenizer",
                str(settings.model_store / "base" / "smollm2"),
                "--out",
                str(base),
            ],
            gpu=gpu,
            timeout_s=3600,
        )
    build_s = round(time.perf_counter() - t0, 1)
    facts = json.loads((base / "cbnano_base.json").read_text())
    lines: list[str] = []
    request = resolve_request(
        settings,
        domain,
        profile="gpu_qlora",
        base_model=name,
        month=SAMPLE_MONTH,
        max_steps=steps,
        overrides=CPU_SMOKE if smoke else None,
    )
    summary = retrain(
        settings,
        request,
        gpu=gpu,
        log=lambda line: (lines.append(line), print("   " + line, file=sys.stderr) if verbose else None),
    )
    if summary["version"] is None:
        raise SystemExit(f"the chain stopped before training: {summary['reason']}")
    train, ev = summary.get("train_stats", {}), summary.get("evaluation", {})
    return {
        "bench": "gpu_retrain",
        "shape": shape,
        "parameters": facts.get("parameters"),
        "smoke": smoke,
        "device": ev.get("device"),
        "eval_dtype": ev.get("dtype"),
        "steps": train.get("steps"),
        "train_tokens_per_s": train.get("tokens_per_s"),
        "train_s_per_step": train.get("s_per_step"),
        "train_peak_gpu_gib": train.get("peak_gpu_gib"),
        "eval_seconds": ev.get("seconds"),
        "eval_peak_gpu_gib": ev.get("peak_gpu_gib"),
        "eval_items": ev.get("items"),
        "eval_heldout_rows": ev.get("heldout"),
        "step_seconds": summary.get("timings"),
        "base_build_s": build_s,
        "version": summary["version"],
        "gate": summary["reason"],
        "machine": f"{platform.machine()} {platform.node()}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shape",
        action="append",
        choices=["smoke", "135m", "1.7b", "8b"],
        help="model shape, repeatable (default 1.7b and 8b; smoke with --smoke)",
    )
    ap.add_argument("--domain", default="catalysis")
    ap.add_argument("--steps", type=int, default=30, help="training steps per shape (default 30)")
    ap.add_argument("--docs", type=int, default=600, help="lab-drop documents (2 examples each) to train on")
    ap.add_argument("--gpu", type=int, default=0, help="GPU index to use (default 0)")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny shape, 2 steps, CUDA knobs off")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream the chain's log to stderr")
    args = ap.parse_args(argv)
    from pipelines.settings import get_settings

    settings = get_settings()
    shapes = args.shape or (["smoke"] if args.smoke else ["1.7b", "8b"])
    steps, docs, gpu = (2, 40, None) if args.smoke else (args.steps, args.docs, args.gpu)
    lab_drop(settings.data_dir / "internal" / args.domain / "gpu_bench.jsonl", docs)
    stage_samples(settings)
    for shape in shapes:
        print(json.dumps(run_shape(shape, args.domain, steps, gpu, args.smoke, args.verbose)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
