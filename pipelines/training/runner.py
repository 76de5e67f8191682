"""Run axolotl in its own environment: train (resumable), merge, and check that training changed weights.

axolotl 0.19's pinned stack cannot share an environment with Airflow, so every call is a subprocess of
``CBNANO_TRAIN_PYTHON``'s ``bin/`` (``axolotl train … --launcher python``; ``axolotl merge-lora``). Its output
is streamed line by line to ``log`` (the Airflow task log, or stderr for the CLI) and kept in the run folder.

The run folder is deterministic — ``<home>/runs/<domain>-<month>-<dataset sha>-<config sha>`` — so a retried
task finds the checkpoints of the failed attempt and resumes from the newest one instead of starting over.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.process_group import end_group, grouped
from pipelines.trainenv import StepError, run_step, train_env
from pipelines.training.configs import config_hash, write_config

Log = Callable[[str], None]
_STEP_LOSS = re.compile(r"\{'loss': '?([0-9.]+)'?.*?'epoch': '?([0-9.]+)'?")


class TrainingError(StepError):
    """axolotl (train or merge) failed; the message carries the command and the last lines it printed."""


@dataclass(frozen=True)
class TrainResult:
    """Where the adapter is, the loss curve, and whether this attempt resumed a checkpoint."""

    run_dir: Path
    adapter_dir: Path
    losses: list[float]
    resumed_from: str | None
    stats: dict[str, float] = field(default_factory=dict)


def run_dir_for(runs_dir: Path, domain: str, month: str, dataset_sha: str, cfg: dict[str, Any]) -> Path:
    """The deterministic folder of a (domain, month, dataset, config) run, under ``runs_dir``."""
    return Path(runs_dir) / f"{domain}-{month}-{dataset_sha[:10]}-{config_hash(cfg)[:10]}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` folder, if a previous attempt left one."""
    ckpts = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def _run(cmd: list[str], env: dict[str, str], log_file: Path, log: Log | None) -> list[str]:
    """Run ``cmd`` in a process group of its own that ends with this process (a killed retrain leaves no
    axolotl worker behind, see :mod:`pipelines.process_group`); its output goes to ``log_file``
    and ``log`` line by line."""
    lines: list[str] = []
    with (
        open(log_file, "a", encoding="utf-8") as fh,
        subprocess.Popen(
            grouped(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            bufsize=1,
            cwd=log_file.parent,
            start_new_session=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                fh.write(line)
                lines.append(line.rstrip())
                if log:
                    log(line.rstrip())
            rc = proc.wait()
        finally:  # an exception here (the task stopped, Ctrl-C) ends axolotl and its workers too
            end_group(proc)
    if rc != 0:
        tail = "\n".join(lines[-15:])
        raise TrainingError(f"{' '.join(cmd)} exited with {rc}; last lines:\n{tail}")
    return lines


# the trainer's progress bar (" 40%|####  | 48/120 [02:10<03:15,  2.71s/it]"); the dataset bars carry a label
_TQDM = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def progress_printer(say: Log, every_s: float = 30.0) -> Log:
    """A log sink for axolotl's output that says, at most every ``every_s`` seconds and at the last step, one
    line of progress: ``train: step 40/120, loss 1.234, 2:10 elapsed, about 4:20 left`` (from the trainer's
    progress bar and its loss dicts); every other line is dropped. For the demo, the CLI and task logs."""
    import time

    state: dict[str, Any] = {"loss": None, "said": -1e9, "last": None}

    def sink(line: str) -> None:
        m = _STEP_LOSS.search(line)
        if m:
            state["loss"] = float(m.group(1))
            return
        bar = _TQDM.search(line)
        if not bar:
            return
        step, total, elapsed, left = bar.groups()
        now = time.monotonic()
        final = step == total
        if (final and state["last"] == step) or (not final and now - state["said"] < every_s):
            return
        state["said"], state["last"] = now, step
        loss = f", loss {state['loss']:.3f}" if state["loss"] is not None else ""
        say(f"train: step {step}/{total}{loss}, {elapsed} elapsed, about {left} left")

    return sink


OWN_LINES = (
    "dataset:",
    "step ",
    "resuming",
    "published:",
    "refused:",
)  # the pipeline's lines, said as they are


def condensed(say: Log, every_s: float = 30.0) -> Log:
    """A retraining log for a person: the pipeline's own lines (:data:`OWN_LINES`) as they are, axolotl's
    output as a progress line at most every ``every_s`` seconds (:func:`progress_printer`); axolotl's full
    output stays in the run folder's ``train.log``."""
    progress = progress_printer(say, every_s)

    def sink(line: str) -> None:
        if line.startswith(OWN_LINES):
            say(line)
        else:
            progress(line)

    return sink


def train(
    cfg: dict[str, Any], run_dir: Path, train_python: str, gpu: int | None = None, log: Log | None = None
) -> TrainResult:
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
    lines = _run(
        [axolotl, "train", str(path), "--launcher", "python"],
        train_env(train_python, gpu),
        run_dir / "train.log",
        log,
    )
    if not (out / "adapter_model.safetensors").is_file():
        raise TrainingError(f"axolotl finished but wrote no adapter in {out}")
    losses = [float(m.group(1)) for line in lines for m in [_STEP_LOSS.search(line)] if m]
    return TrainResult(run_dir, out, losses, str(resumed) if resumed else None, train_stats(lines))


def train_stats(lines: list[str]) -> dict[str, float]:
    """Throughput and memory from axolotl's log dicts: ``train_runtime_s``, ``s_per_step``, ``steps``,
    ``tokens``, ``tokens_per_s`` (all tokens axolotl processed, padding included), ``trainable_tokens``,
    ``peak_gpu_gib`` (torch's max allocated), ``peak_gpu_active_gib``, ``gpu_reserved_gib``; absent keys
    are left out (CPU runs report no memory)."""
    import ast

    records = []
    for line in lines:
        start, end = line.find("{'"), line.rfind("}")
        if start < 0 or end < start:
            continue
        try:
            rec = ast.literal_eval(line[start : end + 1])
        except (ValueError, SyntaxError):
            continue
        if isinstance(rec, dict):
            records.append({k: float(v) for k, v in rec.items() if _is_number(v)})
    out: dict[str, float] = {}
    final = next((r for r in reversed(records) if "train_runtime" in r), None)
    steps = [r for r in records if "loss" in r]
    if final:
        out["train_runtime_s"] = final["train_runtime"]
        if final.get("train_steps_per_second"):
            out["s_per_step"] = round(1 / final["train_steps_per_second"], 3)
            out["steps"] = round(final["train_runtime"] * final["train_steps_per_second"])
    if steps:
        for key, name in (("tokens/total", "tokens"), ("tokens/trainable", "trainable_tokens")):
            if key in steps[-1]:
                out[name] = steps[-1][key]
        if final and out.get("tokens") and final["train_runtime"] > 0:
            out["tokens_per_s"] = round(out["tokens"] / final["train_runtime"], 1)
    for key, name in (
        ("memory/max_allocated (GiB)", "peak_gpu_gib"),
        ("memory/max_active (GiB)", "peak_gpu_active_gib"),
        ("memory/device_reserved (GiB)", "gpu_reserved_gib"),
    ):
        values = [r[key] for r in records if key in r]
        if values and max(values) > 0:
            out[name] = max(values)
    return out


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def merge(
    run_dir: Path,
    train_python: str,
    gpu: int | None = None,
    log: Log | None = None,
    adapter_dir: Path | None = None,
) -> Path:
    """Merge the run's adapter (``adapter_dir``, by default what axolotl wrote in ``out/``) into its base
    (``axolotl merge-lora``, shard by shard); returns the folder (``out/merged``).

    The merged weights are exactly ``W_base + scale · B·A``: what System A computes when it serves the base with
    the adapter. For a QLoRA run axolotl would otherwise "simulate NF4", round-tripping every 2-D tensor of the
    base through 4-bit, embeddings and lm_head included, which QLoRA training never quantized; so the merge
    runs from a copy of the config that says ``adapter: lora`` without 4-bit loading. axolotl's merge works one
    safetensors shard at a time, so it fits beside an 8B model on the leased GPU (or runs on the CPU).
    """
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    merge_cfg = write_config(
        {**cfg, "adapter": "lora", "load_in_4bit": False, "load_in_8bit": False}, run_dir / "merge.yml"
    )
    axolotl = str(Path(train_python).parent / "axolotl")
    _run(
        [axolotl, "merge-lora", str(merge_cfg), "--lora-model-dir", str(adapter_dir or run_dir / "out")],
        train_env(train_python, gpu),
        run_dir / "merge.log",
        log,
    )
    merged = run_dir / "out" / "merged"
    if not (merged / "config.json").is_file():
        raise TrainingError(f"merge-lora wrote no model in {merged}")
    return merged


def interpolate(adapter_dir: Path, into: Path, scale: float, train_python: str) -> dict:
    """Scale the trained adapter's delta by ``scale`` into ``into`` (``steps.interpolate``: every ``lora_B``
    times ``scale``, the base-to-fine-tune line of WiSE-FT; adapter-sized work, on the CPU); returns the
    step's report."""
    return dict(
        run_step(
            train_python,
            "interpolate",
            ["--adapter", str(adapter_dir), "--into", str(into), "--scale", repr(float(scale))],
            timeout_s=600,
        )
    )


MERGE_TOLERANCE = 1e-2  # relative; bf16 rounding of a merged weight is ~4e-3


def check_merge(
    base: Path, adapter_dir: Path, merged: Path, train_python: str, gpu: int | None = None
) -> dict:
    """Verify the merged weights against base + adapter (``steps.check_merge``, on the leased GPU if any).

    Returns the step's report; raises :class:`TrainingError` when a merged weight is not base + scale·B·A
    within :data:`MERGE_TOLERANCE`, when no LoRA target changed, or when a tensor outside the LoRA targets did.
    """
    report = dict(
        run_step(
            train_python,
            "check_merge",
            ["--base", str(base), "--adapter", str(adapter_dir), "--merged", str(merged)],
            gpu=gpu,
            timeout_s=3600,
        )
    )
    if report["max_rel_diff"] > MERGE_TOLERANCE:
        raise TrainingError(
            f"merged weights differ from base + adapter by {report['max_rel_diff']:.3g} "
            f"(relative; tolerance {MERGE_TOLERANCE:g}) in {merged}"
        )
    if not report["changed"]:
        raise TrainingError(f"the merge left every LoRA target unchanged in {merged}")
    if report["others_changed"] or report["others_missing"]:
        raise TrainingError(
            f"the merge changed or lost tensors outside the LoRA targets: "
            f"{(report['others_changed'] + report['others_missing'])[:5]}"
        )
    return report


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
