"""Check a merged model against its base and LoRA adapter, tensor by tensor, on the leased device.

    .venv-train/bin/python -m pipelines.training.steps.check_merge --base BASE --adapter OUT --merged OUT/merged

For every LoRA pair in the adapter, the merged weight must equal ``W_base + scale · B @ A`` (``scale`` =
``lora_alpha / r``, or ``/ √r`` with rsLoRA); every other tensor must be the base's unchanged. Reading one
tensor at a time (memory-mapped safetensors) keeps memory at one layer's size, so an 8B model is checked on a
16 GB card as easily as a tiny one on the CPU; the products run on the GPU when one is leased. This checks the
weights exactly, which a logits comparison cannot do within a card's memory for an 8B model.

Prints one JSON line: ``lora_tensors``, ``other_tensors``, ``max_rel_diff`` (largest ``|merged − expected|``
over the largest ``|expected|``, per tensor; bf16 rounding is ~4e-3), ``changed`` (LoRA targets whose
merged weight differs from the base), ``others_changed`` (names), ``device``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipelines.training.steps._common import StepError, answer, pick_device


class Weights:
    """Lazily read tensors of a (possibly sharded) safetensors checkpoint folder."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [p.name for p in folder.glob("*.safetensors")]
        if not files:
            raise StepError(f"no safetensors weights in {folder}")
        self.where: dict[str, Any] = {}
        for name in files:
            handle = stack.enter_context(safe_open(str(folder / name), framework="pt"))
            for key in handle.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                self.where[key] = handle

    def names(self) -> Iterator[str]:
        """Every tensor name."""
        return iter(sorted(self.where))

    def get(self, name: str) -> Any:
        """One tensor (CPU)."""
        if name not in self.where:
            raise StepError(f"tensor {name} is missing")
        return self.where[name].get_tensor(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True, help="folder with adapter_config.json")
    ap.add_argument("--merged", type=Path, required=True)
    args = ap.parse_args(argv)
    device = pick_device()
    import torch

    cfg = json.loads((args.adapter / "adapter_config.json").read_text())
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    with ExitStack() as stack:
        base = Weights(args.base, stack)
        merged = Weights(args.merged, stack)
        adapter = Weights(args.adapter, stack)
        pairs = {}
        for key in adapter.names():
            if ".lora_A." in key:
                module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
                pairs[module + ".weight"] = (key, key.replace(".lora_A.", ".lora_B."))
        if not pairs:
            raise StepError(f"no LoRA tensors in {args.adapter}")
        worst, changed = 0.0, 0
        for target, (a_key, b_key) in sorted(pairs.items()):
            w = base.get(target).to(device, torch.float32)
            a = adapter.get(a_key).to(device, torch.float32)
            b = adapter.get(b_key).to(device, torch.float32)
            delta = b @ a
            if cfg.get("fan_in_fan_out"):
                delta = delta.T
            expected = w + scale * delta
            got = merged.get(target).to(device, torch.float32)
            if got.shape != expected.shape:
                raise StepError(
                    f"{target}: merged shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
                )
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)))
            changed += int(not torch.equal(got, w))
        others = [n for n in base.names() if n not in pairs]
        others_changed = [
            n
            for n in others
            if n in merged.where and not torch.equal(base.get(n).float(), merged.get(n).float())
        ]
        others_missing = [n for n in others if n not in merged.where and not n.startswith("lm_head")]
    answer(
        {
            "lora_tensors": len(pairs),
            "other_tensors": len(others),
            "max_rel_diff": worst,
            "changed": changed,
            "others_changed": others_changed[:20],
            "others_missing": others_missing[:20],
            "scale": scale,
            "device": device,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
