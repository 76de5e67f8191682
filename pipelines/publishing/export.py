"""A published version for atom (the lab's Mac Mini) and laptops: one GGUF file that llama.cpp and Ollama
load, and an Ollama ``Modelfile`` beside it.

    cbnano models export --domain catalysis [--version V] --format gguf [--type f16] [--out DIR]

The merged model of the version (production by default) is written by the training environment's
``export_gguf`` step (:mod:`pipelines.training.steps.export_gguf`) into ``DIR`` (default
``$CBNANO_HOME/exports/<domain>-<version>/``): ``<domain>-<version>.gguf`` and ``Modelfile``. The export is
recorded in the domain's history (action ``export``). On atom::

    ollama create cbnano-catalysis -f Modelfile && ollama run cbnano-catalysis
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.publishing.model_store import ModelStore, ModelStoreError
from pipelines.settings import Settings
from pipelines.trainenv import run_step

# Ollama's Go templates for the two chat formats the bases use: ChatML (SmolLM2, Qwen) and Llama 3
CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""


def modelfile(gguf_name: str, chat_template: str, domain: str) -> str:
    """An Ollama ``Modelfile``: the GGUF file, the chat template in Ollama's syntax, its stop token, the
    system prompt naming the domain."""
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in chat_template:
        lines += [f'TEMPLATE """{CHATML}"""', 'PARAMETER stop "<|im_end|>"']
    elif "<|start_header_id|>" in chat_template:
        lines += [f'TEMPLATE """{LLAMA3}"""', 'PARAMETER stop "<|eot_id|>"']
    else:
        lines.append("# chat template: Ollama reads the one stored in the GGUF file")
    lines += [
        "PARAMETER temperature 0.2",
        f'SYSTEM """You are the CB Nano lab\'s {domain} assistant. Answer briefly and say when you do not know."""',
    ]
    return "\n".join(lines) + "\n"


def export_version(
    settings: Settings,
    domain: str,
    version: str | None = None,
    fmt: str = "gguf",
    dtype: str = "f16",
    out: Path | None = None,
) -> dict[str, Any]:
    """Export ``version`` (default: production) of ``domain``; returns the step's answer plus the folder
    and the Modelfile. Raises :class:`ModelStoreError` for a version that is not there."""
    if fmt != "gguf":
        raise ModelStoreError(f"export knows one format, gguf, not {fmt!r}")
    store = ModelStore(settings.model_store)
    version = version or store.production(domain)
    if not version:
        raise ModelStoreError(f"{domain} has no production version: name one with --version")
    merged = store.version_dir(domain, version) / "merged"
    if not (merged / "model.safetensors").is_file():
        raise ModelStoreError(f"{domain}/{version} has no merged model to export")
    folder = out or settings.home / "exports" / f"{domain}-{version}"
    name = f"{domain}-{version}.gguf"
    result = run_step(
        settings.train_python,
        "export_gguf",
        ["--model", str(merged), "--out", str(folder / name), "--type", dtype],
        timeout_s=3600,
    )
    template = merged / "chat_template.jinja"
    (folder / "Modelfile").write_text(
        modelfile(name, template.read_text() if template.is_file() else "", domain), encoding="utf-8"
    )
    store.record_export(domain, version, reason=f"gguf ({dtype}) to {folder}")
    return {**result, "domain": domain, "version": version, "modelfile": str(folder / "Modelfile")}
