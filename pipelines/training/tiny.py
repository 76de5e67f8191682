"""Random-init test bases: a tiny Llama with a tokenizer trained on the spot, and real model shapes.

``build_tiny_llama`` is the base of the ``tiny`` profile: seconds to build, a few hundred thousand
parameters, a real Llama architecture and a real (BPE) tokenizer with a chat template, so axolotl trains,
merges and evaluates it exactly as it would a production base. ``build_random_llama`` builds a model of a
real shape (SmolLM2-1.7B's, Llama-3-8B's) around an existing tokenizer, for the GPU check. Their answers are
noise: every such base is marked ``test_model`` and never becomes production unless test models are allowed.

    .venv-train/bin/python -m pipelines.training.steps.build_base --shape tiny --out var/models/base/tiny-llama
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.assets import asset
from pipelines.lake import staged_records

# (hidden, intermediate, layers, attention heads, key/value heads, tied embeddings)
SHAPES: dict[str, tuple[int, int, int, int, int, bool]] = {
    "tiny": (64, 128, 2, 4, 4, False),
    "smoke": (128, 256, 2, 4, 2, False),  # the GPU check's CPU smoke run: a little above tiny
    "135m": (576, 1536, 30, 9, 3, True),  # SmolLM2-135M
    "1.7b": (2048, 8192, 24, 32, 32, True),  # SmolLM2-1.7B
    "8b": (4096, 14336, 32, 32, 8, False),  # Llama-3-8B
}
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]


def _random_llama(
    tok: Any, shape: tuple[int, int, int, int, int, bool], max_positions: int, seed: int, device: str = "cpu"
) -> Any:
    """A random-init ``LlamaForCausalLM`` of ``shape`` (as in :data:`SHAPES`) for the tokenizer ``tok``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv, tied = shape
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(config)


def build_tiny_llama(
    out: Path,
    corpus: Iterable[str],
    vocab_size: int = 1024,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Train a BPE tokenizer on ``corpus``, build a random Llama of that vocabulary, save both to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
    fast.save_pretrained(out)
    model = _random_llama(fast, (hidden, hidden * 2, layers, heads, heads, False), 2048, seed)
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "cbnano_base.json").write_text(
        json.dumps(
            {
                "name": "tiny-llama",
                "parameters": n_params,
                "vocab_size": len(fast),
                "seed": seed,
                "test_model": True,
            },
            indent=2,
        )
    )
    return out


def build_random_llama(out: Path, tokenizer_dir: Path, shape: str, seed: int = 0) -> dict[str, object]:
    """A random-init Llama of ``shape`` (see :data:`SHAPES`) with the tokenizer of ``tokenizer_dir``, in bf16
    (initialised on the GPU when there is one: an 8B model takes minutes on the CPU); returns its facts."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _random_llama(tok, SHAPES[shape], 8192, seed, device).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    facts: dict[str, object] = {
        "name": out.name,
        "shape": shape,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "tokenizer": str(tokenizer_dir),
        "seed": seed,
        "test_model": True,
    }
    (out / "cbnano_base.json").write_text(json.dumps(facts, indent=2))
    return facts


def sample_corpus(data_dir: Path | None = None) -> list[str]:
    """Text to train the tokenizer on: staged records if there are any, else the bundled arXiv sample."""
    texts: list[str] = []
    if data_dir is not None:
        for f in staged_records(data_dir):
            texts += [rec.get("text", "") for rec in f.records()]
    if not texts:
        import xml.etree.ElementTree as ET

        sample = asset("include", "samples", "arxiv")
        for page in sorted(sample.glob("*.xml")):
            texts += [
                el.text or "" for el in ET.parse(page).getroot().iter("{http://www.w3.org/2005/Atom}summary")
            ]
    # the chat template's markers, so the tokenizer has pieces for them
    return texts + ["<|user|>\nWhat is it?</s>\n<|assistant|>\nIt is.</s>\n"] * 20
