"""Move a trained LoRA adapter part of the way back towards its base: scale every ``lora_B`` by ``--scale``.

    .venv-train/bin/python -m pipelines.training.steps.interpolate --adapter OUT --into RUN/adapter --scale 0.8

A LoRA adapter adds ``scale · B·A`` to each target weight, so multiplying every ``B`` by ``s`` gives the weights
``W_base + s·(W_trained − W_base)``: a point on the straight line between the base and the fine-tuned model
(weight-space ensembling, WiSE-FT: Wortsman et al., CVPR 2022). The result is an ordinary adapter (same
``adapter_config.json``, same shapes) that PEFT, vLLM, the merge and its check read like any other.

The trained folder is left as axolotl wrote it (its checkpoints resume from it); the scaled copy goes to
``--into``, written beside it and renamed into place, so a crash never leaves half an adapter there. Every
other file of the adapter folder (config, tokenizer, chat template) is copied; sub-folders (checkpoints, the
merged model) are not.

Prints one JSON line: ``scale``, ``scaled`` (B tensors), ``kept`` (other tensors), ``adapter`` (the folder).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipelines.training.steps._common import StepError, answer

WEIGHTS = "adapter_model.safetensors"


def interpolate(adapter: Path, into: Path, scale: float) -> dict[str, object]:
    """Write ``adapter`` with every ``lora_B`` tensor times ``scale`` into ``into``; returns the counts."""
    from safetensors.torch import load_file, save_file

    if not 0.0 < scale <= 1.0:
        raise StepError(f"--scale must be in (0, 1], got {scale}")
    if not (adapter / WEIGHTS).is_file():
        raise StepError(f"no {WEIGHTS} in {adapter}")
    tensors = load_file(str(adapter / WEIGHTS))
    names = [k for k in tensors if ".lora_B." in k]
    if not names:
        raise StepError(f"{adapter / WEIGHTS} holds no lora_B tensors")
    for name in names:
        tensors[name] = tensors[name] * scale
    partial = into.with_name(into.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for f in adapter.iterdir():
        if f.is_file() and f.name != WEIGHTS:
            shutil.copy2(f, partial / f.name)
    save_file(tensors, str(partial / WEIGHTS), metadata={"format": "pt"})
    shutil.rmtree(into, ignore_errors=True)
    partial.rename(into)
    return {"scale": scale, "scaled": len(names), "kept": len(tensors) - len(names), "adapter": str(into)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, required=True, help="the trained adapter folder")
    ap.add_argument("--into", type=Path, required=True, help="where the scaled adapter goes")
    ap.add_argument(
        "--scale", type=float, required=True, help="0 < s <= 1: the share of the trained delta kept"
    )
    args = ap.parse_args(argv)
    answer(interpolate(args.adapter, args.into, args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
