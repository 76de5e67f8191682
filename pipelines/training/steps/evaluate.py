"""Score the base, production and candidate models of one retraining run, per item, on one device.

    .venv-train/bin/python -m pipelines.training.steps.evaluate --spec var/runs/<run>/eval_spec.json
    CUDA_VISIBLE_DEVICES=0 .venv-train/bin/python -m pipelines.training.steps.evaluate --spec ...

The spec (written by ``pipelines.training.retrain``)::

    {"groups": [{"base": "/store/base/smollm2",
                 "roles": {"base": null, "production": "/store/chemistry/versions/v1/adapter",
                           "candidate": "/runs/<run>/out"}}],
     "items": ["include/eval/chemistry.jsonl", "include/eval/materials.jsonl", ...],
     "heldout": "/data/datasets/chemistry/2026-11/val.jsonl",
     "probe": "/data/datasets/chemistry/2026-11/probe.jsonl", "domain": "chemistry",
     "load_in_4bit": true, "max_batch_tokens": 4096}

Each group's base is loaded once; roles without an adapter are scored on the bare base first, then each
adapter is attached (PEFT) and scored in turn: exactly what System A serves (base + LoRA adapter). Precision
follows what training fitted: on a GPU the base in 4-bit NF4 (double quantization, bf16 compute) when the
profile trains QLoRA, else bf16 (fp16 on cards without bf16); on the CPU fp32 (4-bit when the profile asks,
through bitsandbytes' CPU kernels). Prints one JSON line: per role ``metrics`` and ``per_item``, the device,
dtype, seconds and (on a GPU) peak memory.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from pipelines.contracts import ChatRow, ChoiceItem, EvalGroup, PassageRow, ProbeItem, Scores
from pipelines.training.steps._common import answer, pick_device, progress


def load_base(path: str, device: str, load_in_4bit: bool) -> tuple[Any, Any, str]:
    """(model, tokenizer, dtype name) of a base model folder on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["device_map"] = {"": 0}
    else:
        dtype = torch.float32
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if device != "cuda" and not load_in_4bit:
        model = model.to(device)
    tok = AutoTokenizer.from_pretrained(path)
    name = ("nf4+" if load_in_4bit else "") + str(dtype).removeprefix("torch.")
    return model, tok, name


def score_group(
    group: EvalGroup,
    items: list[ChoiceItem],
    heldout: list[ChatRow],
    device: str,
    load_in_4bit: bool,
    max_batch_tokens: int,
    probe: list[ProbeItem] | None = None,
    domain: str | None = None,
    general: list[PassageRow] | None = None,
) -> tuple[dict[str, Scores], str]:
    """Scores of every role of one base: ({role: {"metrics", "per_item"}}, dtype name)."""
    from peft import PeftModel

    from pipelines.evaluation.scoring import Scorer

    model, tok, dtype = load_base(group["base"], device, load_in_4bit)
    roles: dict[str, str | None] = group["roles"]
    out: dict[str, Scores] = {}
    total = len(items) + len(heldout) + len(probe or []) + len(general or [])

    def scored(role: str, t0: float) -> None:  # a progress line the caller shows (pipelines.trainenv)
        done = len(out)
        progress(
            f"evaluate: {role} scored on {total} items ({time.perf_counter() - t0:.0f}s), {done}/{len(roles)} roles"
        )

    for role in [r for r, a in roles.items() if not a]:  # the bare base first, before any adapter is attached
        t0 = time.perf_counter()
        out[role] = Scorer(model, tok, device, max_batch_tokens).score(
            items, heldout, probe or [], domain, general or []
        )
        scored(role, t0)
    peft_model = None
    for n, (role, adapter) in enumerate(roles.items()):
        if not adapter:
            continue
        # PEFT names a module after its adapter, and a module name cannot hold "." (a role such as
        # "realx0.8-2" can): the adapters get names of their own, the scores keep the role's
        name = f"adapter{n}"
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, adapter, adapter_name=name, is_trainable=False)
        else:
            peft_model.load_adapter(adapter, adapter_name=name, is_trainable=False)
        peft_model.set_adapter(name)
        t0 = time.perf_counter()
        out[role] = Scorer(peft_model, tok, device, max_batch_tokens).score(
            items, heldout, probe or [], domain, general or []
        )
        scored(role, t0)
    return out, dtype


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, required=True, help="evaluation spec (JSON, see module docstring)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    spec = json.loads(args.spec.read_text())
    device = pick_device()
    import torch

    from pipelines.evaluation.scoring import load_items

    paths = spec.get("items") or []
    items = [it for path in ([paths] if isinstance(paths, str) else paths) for it in load_items(Path(path))]
    heldout, probe = (
        [json.loads(line) for line in Path(spec[key]).read_text().splitlines() if line.strip()]
        if spec.get(key)
        else []
        for key in ("heldout", "probe")
    )
    t0 = time.perf_counter()
    roles: dict[str, Scores] = {}
    dtype = ""
    for group in spec["groups"]:
        scored, dtype = score_group(
            group,
            items,
            heldout,
            device,
            bool(spec.get("load_in_4bit")),
            int(spec.get("max_batch_tokens", 4096)),
            probe,
            spec.get("domain"),
            spec.get("general") or [],
        )
        roles.update(scored)
        if device == "cuda":
            torch.cuda.empty_cache()
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None
    answer(
        {
            "roles": roles,
            "device": device,
            "dtype": dtype,
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_gpu_gib": peak,
            "items": len(items),
            "heldout": len(heldout),
            "probe": len(probe),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
