"""A tiny random Llama with a tokenizer trained on the spot: the base model of the ``tiny`` profile.

Seconds to build, a few hundred thousand parameters, a real Llama architecture and a real (BPE) tokenizer
with a chat template, so axolotl trains, merges and evaluates it exactly as it would a production base.
Its answers are noise; it exists to exercise the whole monthly chain on CPU in tests and demos.

    .venv/bin/python -m pipelines.training.tiny --out var/models/base/tiny-llama
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]


def build_tiny_llama(out: Path, corpus: Iterable[str], vocab_size: int = 1024, hidden: int = 64,
                     layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Train a BPE tokenizer on ``corpus``, build a random Llama of that vocabulary, save both to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", chat_template=CHAT_TEMPLATE, model_max_length=2048)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "cbnano_base.json").write_text(json.dumps({"name": "tiny-llama", "parameters": n_params,
                                                      "vocab_size": len(fast), "seed": seed}, indent=2))
    return out


def sample_corpus(data_dir: Path | None = None) -> list[str]:
    """Text to train the tokenizer on: staged records if there are any, else the bundled arXiv sample."""
    texts: list[str] = []
    if data_dir is not None:
        for f in sorted(data_dir.glob("*/*/*/records.jsonl")):
            texts += [json.loads(line).get("text", "") for line in f.read_text().splitlines() if line.strip()]
    if not texts:
        import xml.etree.ElementTree as ET

        sample = Path(__file__).resolve().parents[2] / "include" / "samples" / "arxiv"
        for f in sorted(sample.glob("*.xml")):
            texts += [el.text or "" for el in ET.parse(f).getroot().iter("{http://www.w3.org/2005/Atom}summary")]
    return texts + ["Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request. ### Instruction: ### Input: ### Response:"] * 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vocab-size", type=int, default=1024)
    args = ap.parse_args()
    path = build_tiny_llama(args.out, sample_corpus(), vocab_size=args.vocab_size)
    print(json.dumps({"base": str(path), **json.loads((path / "cbnano_base.json").read_text())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
