"""Benchmark: CPU training throughput of SmolLM2-135M LoRA (profile cpu_lora), sample packing on vs off.

    .venv/bin/cbnano models import-base smollm2      # once
    .venv/bin/python bench/train.py [--steps 8]

Same 200 alpaca rows (compound-fact phrasings, short like the platform's data), same config but
``sample_packing``; real axolotl in .venv-train. Throughput = tokens axolotl reports as processed
(``tokens/total`` at the last step, padding included) / ``train_runtime``; "trainable" counts only the
response tokens that carry loss. Packing puts several short examples in one 512-token row, so more useful
tokens go through each step. Prints a JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rows(n: int) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        out.append(
            {
                "instruction": f"What is the molecular weight of test compound {i}?",
                "input": "",
                "output": f"Test compound {i} has a molecular weight of {100 + i * 0.37:.2f} g/mol.",
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    from pipelines.settings import get_settings
    from pipelines.training.configs import render_config
    from pipelines.training.runner import train

    settings = get_settings()
    base = settings.model_store / "base" / "smollm2"
    if not (base / "config.json").is_file():
        print("import the base first: .venv/bin/cbnano models import-base smollm2", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cbnano-bench-train-"))
    ds = tmp / "train.jsonl"
    ds.write_text("\n".join(json.dumps(r) for r in rows(200)) + "\n")
    for packing in (False, True):
        cfg = render_config(
            "cpu_lora",
            "chemistry",
            {
                "base_model": str(base),
                "datasets": [{"path": str(ds), "type": "alpaca", "ds_type": "json"}],
                "max_steps": args.steps,
                "sample_packing": packing,
                "pad_to_sequence_len": packing,
                "save_steps": 1000,
            },
        )
        lines: list[str] = []
        train(cfg, tmp / f"run-packing-{packing}", settings.train_python, log=lines.append)
        text = "\n".join(lines)
        runtime = float(re.findall(r"'train_runtime': '?([0-9.]+)", text)[-1])
        total = int(re.findall(r"'tokens/total': '?([0-9]+)", text)[-1])
        trainable = int(re.findall(r"'tokens/trainable': '?([0-9]+)", text)[-1])
        print(
            json.dumps(
                {
                    "bench": "train_cpu_lora",
                    "model": "SmolLM2-135M",
                    "sample_packing": packing,
                    "steps": args.steps,
                    "train_runtime_s": runtime,
                    "tokens": total,
                    "tokens_per_s": round(total / runtime, 1),
                    "trainable_tokens": trainable,
                    "trainable_tokens_per_s": round(trainable / runtime, 1),
                    "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
