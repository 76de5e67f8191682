"""`cbnano models export --format gguf`: a version's merged model as one GGUF file and an Ollama Modelfile.

The GGUF file is read back by transformers' GGUF loader (which undoes llama.cpp's tensor layout and builds
the tokenizer from the file's vocabulary) in the training environment: the logits must be the safetensors
model's, and the tokens the same. llama.cpp itself is not installed here (llama-cpp-python compiles for
minutes), so that loader is the check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.publishing.model_store import ModelStore

pytestmark = pytest.mark.integration
TRAIN_PYTHON = Path(__file__).resolve().parents[2] / ".venv-train" / "bin" / "python"

READ_BACK = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
merged, folder, name = sys.argv[1:4]
ref = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
tok, tok_back = AutoTokenizer.from_pretrained(merged), AutoTokenizer.from_pretrained(folder, gguf_file=name)
text = "The catalyst's turnover frequency rose with ceria."
ids = tok(text, return_tensors="pt").input_ids
with torch.no_grad():
    diff = (ref(ids).logits - back(ids).logits).abs().max().item()
print(json.dumps({"max_abs_diff": diff, "same_tokens": ids.tolist() == tok_back(text, return_tensors="pt").input_ids.tolist()}))
"""


def test_a_version_exports_as_gguf_that_reads_back_as_the_same_model(cbnano_env, tmp_path, capsys):
    from pipelines.training.tiny import build_tiny_llama, sample_corpus

    tiny = build_tiny_llama(tmp_path / "tiny-llama", sample_corpus(), vocab_size=512)
    content = tmp_path / "content"
    shutil.copytree(tiny, content / "merged")
    (content / "merged" / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    )
    store = ModelStore(cbnano_env.model_store)
    store.publish("catalysis", "2026-11.x", content, {}, promote=True)
    capsys.readouterr()
    assert main(["models", "export", "--domain", "catalysis", "--format", "gguf", "--type", "f32"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = cbnano_env.home / "exports" / "catalysis-2026-11.x"
    gguf = folder / "catalysis-2026-11.x.gguf"
    assert (
        out["file"] == str(gguf) and gguf.is_file() and out["tensors"] > 0 and out["version"] == "2026-11.x"
    )
    assert not list(folder.glob("*.partial"))
    modelfile = (folder / "Modelfile").read_text()
    assert (
        modelfile.startswith("FROM ./catalysis-2026-11.x.gguf\n")
        and 'PARAMETER stop "<|im_end|>"' in modelfile
    )
    assert store.history("catalysis")[-1]["action"] == "export"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    merged = store.version_dir("catalysis", "2026-11.x") / "merged"
    proc = subprocess.run(
        [str(TRAIN_PYTHON), "-c", READ_BACK, str(merged), str(folder), gguf.name],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = json.loads(proc.stdout.strip().splitlines()[-1])
    assert check["same_tokens"] and check["max_abs_diff"] < 1e-4, check
    # nothing to export: a clear error, exit 2
    assert main(["models", "export", "--domain", "thermal", "--format", "gguf"]) == 2
    assert "thermal has no production version" in capsys.readouterr().err
