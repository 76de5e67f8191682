"""Run axolotl in its own environment: train (resumable), merge, and check that training changed weights.

axolotl 0.19's pinned stack cannot share an environment with Airflow, so every call is a subprocess of
``CBNANO_TRAIN_PYTHON``'s ``bin/`` (``axolotl train … --launcher python``; ``axolotl merge-lora``). Its output
is streamed line by line to ``log`` (the Airflow task log, or stderr for the CLI) and kept in the run folder.

The run folder is deterministic — ``<home>/runs/<domain>-<month>-<dataset sha>-<config sha>`` — so a retried
task finds the checkpoints of the failed attempt and resumes from the newest one instead of starting over.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.training.configs import config_hash, write_config

Log = Callable[[str], None]
_STEP_LOSS = re.compile(r"\{'loss': '?([0-9.]+)'?.*?'epoch': '?([0-9.]+)'?")


class TrainingError(RuntimeError):
    """axolotl failed; the message carries the command and the last lines it printed."""


@dataclass(frozen=True)
class TrainResult:
    """Where the adapter is, the loss curve, and whether this attempt resumed a checkpoint."""

    run_dir: Path
    adapter_dir: Path
    losses: list[float]
    resumed_from: str | None


def run_dir_for(runs_dir: Path, domain: str, month: str, dataset_sha: str, cfg: dict[str, Any]) -> Path:
    """The deterministic folder of a (domain, month, dataset, config) run, under ``runs_dir``."""
    return Path(runs_dir) / f"{domain}-{month}-{dataset_sha[:10]}-{config_hash(cfg)[:10]}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder, if a previous attempt left one."""
    ckpts = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def train_env(train_python: str, gpu: int | None) -> dict[str, str]:
    """Environment of an axolotl subprocess: its venv first on PATH, one GPU (or none), no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(train_python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    env["AXOLOTL_DO_NOT_TRACK"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    if not env.get("WANDB_API_KEY"):
        env["WANDB_MODE"] = "offline"
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(cmd: list[str], env: dict[str, str], log_file: Path, log: Log | None) -> list[str]:
    lines: list[str] = []
    with open(log_file, "a", encoding="utf-8") as fh, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
            cwd=log_file.parent) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            lines.append(line.rstrip())
            if log:
                log(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(lines[-15:])
        raise TrainingError(f"{' '.join(cmd)} exited with {rc}; last lines:\n{tail}")
    return lines


def train(cfg: dict[str, Any], run_dir: Path, train_python: str, gpu: int | None = None,
          log: Log | None = None) -> TrainResult:
    """Train ``cfg`` in ``run_dir`` (resuming the newest checkpoint there); returns the adapter and losses."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "out"
    cfg = {**cfg, "output_dir": str(out), "dataset_prepared_path": str(run_dir / "prepared")}
    resumed = latest_checkpoint(out)
    if resumed is not None:
        cfg["resume_from_checkpoint"] = str(resumed)
        if log:
            log(f"resuming from {resumed}")
    path = write_config(cfg, run_dir / "config.yml")
    axolotl = str(Path(train_python).parent / "axolotl")
    lines = _run([axolotl, "train", str(path), "--launcher", "python"], train_env(train_python, gpu),
                 run_dir / "train.log", log)
    if not (out / "adapter_model.safetensors").is_file():
        raise TrainingError(f"axolotl finished but wrote no adapter in {out}")
    losses = [float(m.group(1)) for line in lines for m in [_STEP_LOSS.search(line)] if m]
    return TrainResult(run_dir, out, losses, str(resumed) if resumed else None)


def merge(run_dir: Path, train_python: str, log: Log | None = None) -> Path:
    """Merge the run's adapter into its base (``axolotl merge-lora``, de-quantizing for QLoRA); returns the folder."""
    axolotl = str(Path(train_python).parent / "axolotl")
    _run([axolotl, "merge-lora", str(run_dir / "config.yml"), "--lora-model-dir", str(run_dir / "out")],
         train_env(train_python, None), run_dir / "merge.log", log)
    merged = run_dir / "out" / "merged"
    if not (merged / "config.json").is_file():
        raise TrainingError(f"merge-lora wrote no model in {merged}")
    return merged


_CHECK_MERGE = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch, yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
cfg = yaml.safe_load(open(sys.argv[1]))
out, prompts = sys.argv[2], json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(out + "/merged")
base = AutoModelForCausalLM.from_pretrained(cfg["base_model"], dtype=torch.float32)
with_adapter = PeftModel.from_pretrained(base, out).eval()
merged = AutoModelForCausalLM.from_pretrained(out + "/merged", dtype=torch.float32).eval()
worst = 0.0
with torch.no_grad():
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        worst = max(worst, float((with_adapter(ids).logits - merged(ids).logits).abs().max()))
print(json.dumps({"max_abs_logit_diff": worst}))
"""


def check_merge(run_dir: Path, train_python: str, prompts: list[str]) -> float:
    """Largest logit difference between base+adapter and the merged model on ``prompts`` (in the train env).

    For LoRA it should be float noise; for QLoRA the adapter ran over a 4-bit base while the merge
    de-quantized it, so expect quantization-sized differences.
    """
    import json

    proc = subprocess.run([train_python, "-c", _CHECK_MERGE, str(run_dir / "config.yml"), str(run_dir / "out"),
                           json.dumps(prompts)], capture_output=True, text=True, env=train_env(train_python, None),
                          timeout=600)
    if proc.returncode != 0:
        raise TrainingError(f"merge check failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["max_abs_logit_diff"])


def adapter_changed(adapter_dir: Path) -> bool:
    """True when training moved the LoRA weights: LoRA's B matrices start at zero, so any non-zero B moved.

    Reads the safetensors file directly (8-byte header length, JSON header, raw little-endian data), so it
    needs no torch in Airflow's process and works for any float dtype: +0.0 is all-zero bytes in every one.
    """
    import json as _json
    import struct

    path = adapter_dir / "adapter_model.safetensors"
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = _json.loads(fh.read(header_len))
        base = 8 + header_len
        for name, meta in header.items():
            if name == "__metadata__" or "lora_B" not in name:
                continue
            start, end = meta["data_offsets"]
            fh.seek(base + start)
            if any(fh.read(end - start)):
                return True
    return False


def run_in_train_env(train_python: str, code: str, args: list[str], timeout_s: float = 3600) -> Any:
    """Run ``code`` with the training environment's interpreter, the project's ``pipelines`` importable;
    returns the JSON its last stdout line holds. Keeps torch/transformers out of Airflow's processes."""
    import json as _json

    root = str(Path(__file__).resolve().parents[2])
    prelude = f"import sys; sys.path.insert(0, {root!r})\n"
    proc = subprocess.run([train_python, "-c", prelude + code, *args], capture_output=True, text=True,
                          env=train_env(train_python, None), timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise TrainingError(f"training-environment step failed: {' | '.join(tail)}")
    return _json.loads(proc.stdout.strip().splitlines()[-1])
