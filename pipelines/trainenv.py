"""The bridge into the training environment (``CBNANO_TRAIN_PYTHON``), on the ground floor of the package.

axolotl 0.19's pinned stack cannot share an environment with Airflow, and torch/transformers must stay out of
Airflow's processes, so every step that needs them runs as ``python -m pipelines.training.steps.<step>`` in
that environment: :func:`run_step` starts it (in a process group of its own that ends with this process),
and returns the JSON object its last stdout line holds. Each step's answer has a type here. Failures are one
:class:`StepError` naming the step and its last lines. Imports nothing of the platform but the process-group
leader, so any layer may use it (evaluation, retrieval, training).

    answer: GenerateAnswer = run_step(train_python, "generate", ["--model", folder, ...])
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from pipelines.contracts import Scores
from pipelines.process_group import end_group, grouped

PROGRESS = "progress: "  # a step's stderr line that says how far it has got (run_step's ``on_progress``)


class StepError(RuntimeError):
    """A training-environment step failed, timed out or gave no answer; the message names it."""


class GenerateAnswer(TypedDict):
    """``generate``: a local answer of a model folder to a chat."""

    answer: str
    new_tokens: int
    prompt_tokens: int
    seconds: float


class ImportBaseAnswer(TypedDict, total=False):
    """``import_base``: what was written for an imported base (its manifest fields)."""

    name: str
    parameters: int
    eos_token: str
    files: dict[str, str]


ValidateAnswer = list[str]  # ``validate_config``: one line per problem of the rendered axolotl configs


class EvaluateAnswer(TypedDict, total=False):
    """``evaluate``: per role (``base``, ``production``, ``candidate``) its metrics and per-item scores."""

    roles: dict[str, Scores]
    device: str


def _pipelines_path() -> str:
    """A folder holding the ``pipelines`` package and nothing else of Airflow's environment.

    From a source checkout (editable install) that is the project root; from an installed package it is a
    private folder with a link to the package, so the training environment never sees Airflow's site-packages.
    """
    pkg = Path(__file__).resolve().parent
    if (pkg.parent / "pyproject.toml").is_file():
        return str(pkg.parent)
    shim = Path(tempfile.gettempdir()) / f"cbnano-pipelines-{os.getuid()}"
    shim.mkdir(exist_ok=True)
    link = shim / "pipelines"
    if not link.exists():
        link.symlink_to(pkg)
    return str(shim)


def train_env(train_python: str, gpu: int | None) -> dict[str, str]:
    """Environment of a training-environment subprocess: its venv first on PATH, ``pipelines`` importable,
    one GPU (or none: ``CUDA_VISIBLE_DEVICES=""``), no telemetry, offline hub."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(train_python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = _pipelines_path()
    env["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    env["AXOLOTL_DO_NOT_TRACK"] = "1"
    env["TOKENIZERS_PARALLELISM"] = env.get("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if not env.get("WANDB_API_KEY"):
        env["WANDB_MODE"] = "offline"
    env.pop("VIRTUAL_ENV", None)
    return env


def run_step(
    train_python: str,
    step: str,
    args: list[str],
    gpu: int | None = None,
    timeout_s: float = 3600,
    on_progress: Callable[[str], None] | None = None,
) -> Any:
    """Run ``pipelines.training.steps.<step>`` with the training environment's interpreter on one GPU (or
    the CPU); returns the JSON its last stdout line holds. Keeps torch/transformers out of Airflow's processes.

    Raises FileNotFoundError when the environment is missing and :class:`StepError` (with the step's last
    lines) when the step fails, times out or prints no JSON. The answer's shape is the step's: see the types
    above (``validate_config`` answers a list of problems).
    """
    import json as _json

    if not Path(train_python).exists():
        raise FileNotFoundError(
            f"training environment not found: {train_python} (run `make setup-train`, "
            "or set CBNANO_TRAIN_PYTHON)"
        )
    cmd = [train_python, "-m", f"pipelines.training.steps.{step}", *args]
    with subprocess.Popen(
        grouped(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=train_env(train_python, gpu),
        start_new_session=True,
    ) as running:
        # both pipes are read as they fill (a step's chatter must not block it); its progress lines are
        # handed to ``on_progress`` as they come
        chunks: dict[str, list[str]] = {"out": [], "err": []}

        def drain(pipe: Any, into: list[str], progress: bool) -> None:
            for line in pipe:
                into.append(line)
                if progress and on_progress is not None and line.startswith(PROGRESS):
                    on_progress(line[len(PROGRESS) :].rstrip())

        readers = [
            threading.Thread(target=drain, args=(running.stdout, chunks["out"], False), daemon=True),
            threading.Thread(target=drain, args=(running.stderr, chunks["err"], True), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            running.wait(timeout=timeout_s)
            for reader in readers:
                reader.join()
        except subprocess.TimeoutExpired:
            raise StepError(f"training-environment step {step} ran over {timeout_s:.0f}s") from None
        finally:
            end_group(running)
        out, err = "".join(chunks["out"]), "".join(chunks["err"])
    proc = subprocess.CompletedProcess(cmd, running.returncode, out, err)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StepError(
            f"training-environment step {step} failed (exit {proc.returncode}): {' | '.join(tail)}"
        )
    try:
        answer = _json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise StepError(
            f"training-environment step {step} printed no result; stderr: {proc.stderr.strip()[-300:]}"
        ) from None
    return answer
