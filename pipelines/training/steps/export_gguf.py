"""Write a merged Llama-architecture model (a version's ``merged/`` folder) as one GGUF file, the format
llama.cpp and Ollama load, for atom (the lab's Mac) and any laptop.

    .venv-train/bin/python -m pipelines.training.steps.export_gguf --model <version>/merged --out model.gguf \
        [--type f16|f32]

Written here on the ``gguf`` package (the writer llama.cpp's own converter uses):

* the hyperparameters under ``llama.*`` (context, width, blocks, feed-forward width, heads and KV heads,
  RoPE base and dimensions, RMS-norm epsilon) from ``config.json``;
* the tokenizer as llama.cpp's byte-level BPE (``gpt2``): every token by id, its type (special tokens are
  control tokens), the merges, the bos/eos/pad ids and the chat template;
* every tensor under llama.cpp's name (``blk.N.attn_q.weight``, ...); the query and key projections are
  reordered from Hugging Face's rotary layout (the two halves of each head) to llama.cpp's (interleaved
  pairs), which is the one thing a plain copy would get wrong; norms stay float32, matrices ``--type``.

Only ``LlamaForCausalLM`` models are exported (SmolLM2 and the Llama bases the profiles train); anything else
is refused. Prints one JSON line: the file, its size, the tensor count and the type.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipelines.training.steps._common import StepError, answer, progress


def rotary_to_interleaved(weight: Any, heads: int) -> Any:
    """A query/key projection's rows in llama.cpp's RoPE order: per head, Hugging Face keeps the first and
    second halves of the rotary pairs apart; llama.cpp wants each pair's two rows next to each other."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _vocab(model_dir: Path) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens by id, their GGUF token types, BPE merges, special ids) from ``tokenizer.json``."""
    import gguf

    tok = json.loads((model_dir / "tokenizer.json").read_text())
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise StepError(f"only byte-level BPE tokenizers are exported, not {model.get('type')!r}")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens") or []}
    by_id.update({i: a["content"] for i, a in added.items()})
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = []
    for i in range(size):
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    ids = {v: k for k, v in enumerate(tokens)}
    special = {
        role: ids[str(cfg[f"{role}_token"])]
        for role in ("bos", "eos", "pad", "unk")
        if isinstance(cfg.get(f"{role}_token"), str) and cfg[f"{role}_token"] in ids
    }
    return tokens, [int(t) for t in types], merges, special


def export(model_dir: Path, out: Path, dtype: str = "f16") -> dict[str, Any]:
    import gguf
    import numpy as np
    from safetensors.torch import load_file  # torch reads bf16, which numpy cannot

    config = json.loads((model_dir / "config.json").read_text())
    if "LlamaForCausalLM" not in (config.get("architectures") or []):
        raise StepError(f"only LlamaForCausalLM models are exported, not {config.get('architectures')}")
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or 0)
    kv_heads = kv_heads or heads
    blocks = int(config["num_hidden_layers"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(model_dir.parent.name or model_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    rope = config.get("rope_parameters") or {}  # transformers 5 keeps rope_theta there
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    tokens, types, merges, special = _vocab(model_dir)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if "smollm" in json.dumps(config).lower() else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for role, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):  # fmt: skip
        if role in special:
            add(special[role])
    template = model_dir / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, blocks)
    weights = load_file(str(model_dir / "model.safetensors"))
    written = 0
    for hf_name, tensor in weights.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise StepError(f"no GGUF name for the tensor {hf_name}")
        data = tensor.float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = rotary_to_interleaved(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = rotary_to_interleaved(data, kv_heads)
        if dtype == "f16" and data.ndim > 1:
            data = data.astype(np.float16)
        writer.add_tensor(name, data)
        written += 1
    progress(f"export: writing {written} tensors to {out.name}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"file": str(out), "bytes": out.stat().st_size, "tensors": written, "type": dtype}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a merged model folder (config, safetensors)")
    ap.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    ap.add_argument("--type", choices=["f16", "f32"], default="f16", help="matrices' type (norms stay f32)")
    args = ap.parse_args(argv)
    if not (args.model / "model.safetensors").is_file():
        raise StepError(f"{args.model} has no model.safetensors (a version's merged/ folder is expected)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    result = export(args.model, partial, args.type)
    partial.replace(args.out)  # a killed export leaves no file that looks complete
    answer({**result, "file": str(args.out)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
