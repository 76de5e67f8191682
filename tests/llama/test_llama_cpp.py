"""The `llama` tier: a version exported with `cbnano models export --format gguf` runs in llama.cpp.

atom, the lab's Mac Mini, runs models with Ollama, which is llama.cpp. Here llama.cpp comes from
llama-cpp-python in its own environment (`.venv-llama`, which `make setup-llama` compiles: the package ships as
source only). The model is the real CPU base, SmolLM2-135M-Instruct, published as a domain's version: llama.cpp
must tokenize text as transformers does, give the same next-token logits (f32 export), and answer a chat
request through the chat template the export wrote into the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.publishing.model_store import ModelStore
from pipelines.training.base_models import import_smollm2

pytestmark = pytest.mark.llama
ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = str(ROOT / ".venv-train" / "bin" / "python")
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"
TEXT = "The ceria-supported nickel catalyst converted 82% of the methane at 700 °C."

IN_LLAMA_CPP = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
path, text = sys.argv[1:3]
llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False, seed=0)
ids = llm.tokenize(text.encode(), add_bos=False, special=False)
llm.eval(ids)
logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
llm.reset()
answer = llm.create_chat_completion(
    messages=[{"role": "user", "content": "Name one metal used as a catalyst."}], max_tokens=24, temperature=0.0
)
print(json.dumps({"ids": ids, "logits": logits.tolist(), "chat": answer}))
"""


def reference_logits(model_dir: Path, text: str) -> tuple[list[int], list[list[float]]]:
    """transformers' token ids and float32 next-token logits for ``text`` (no special tokens added)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return ids, logits.tolist()


def test_an_exported_smollm2_version_runs_in_llama_cpp_as_in_transformers(cbnano_env, tmp_path, capsys):
    assert LLAMA_PYTHON.is_file(), "the llama tier needs .venv-llama: run `make setup-llama`"
    store = ModelStore(cbnano_env.model_store)
    import_smollm2(cbnano_env.model_store, TRAIN_PYTHON)
    content = tmp_path / "content"
    shutil.copytree(store.base_dir("smollm2"), content / "merged")
    store.publish("catalysis", "2026-11.a", content, {}, promote=True)
    capsys.readouterr()
    assert main(["models", "export", "--domain", "catalysis", "--format", "gguf", "--type", "f32"]) == 0
    gguf = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["file"])

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(LLAMA_PYTHON), "-c", IN_LLAMA_CPP, str(gguf), TEXT],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    ids, logits = reference_logits(content / "merged", TEXT)
    assert got["ids"] == ids  # the vocabulary and the pre-tokenizer survived the export
    # the same network: every position's next-token logits agree (float32 both sides; llama.cpp sums in
    # another order, so not bit for bit), and so does the token each position predicts where it is clear
    ours, theirs = np.asarray(got["logits"]), np.asarray(logits)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 0.05, np.abs(ours - theirs).max()
    top2 = np.sort(theirs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.1
    assert clear.sum() >= len(ids) // 2
    assert (ours.argmax(1)[clear] == theirs.argmax(1)[clear]).all()

    # a chat request through the template inside the file: an answer that ends at the end of turn
    choice = got["chat"]["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert "<|im_start|>" not in choice["message"]["content"] and choice["finish_reason"] in (
        "stop",
        "length",
    )
