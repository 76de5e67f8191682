"""Build a random-init test base: the ``tiny`` profile's Llama, or a real shape around a given tokenizer.

    .venv-train/bin/python -m pipelines.training.steps.build_base --shape tiny --out var/models/base/tiny-llama
    .venv-train/bin/python -m pipelines.training.steps.build_base --shape 8b --tokenizer var/models/base/smollm2 \\
        --out var/models/base/random-8b

``tiny`` trains its own BPE tokenizer on the staged records under ``--data-dir`` (or the bundled arXiv
sample); the other shapes (``smoke``, ``135m``, ``1.7b``, ``8b``: see ``pipelines.training.tiny.SHAPES``)
take ``--tokenizer``. Prints one JSON line with the model's facts; writes ``cbnano_base.json`` with
``test_model: true`` (random weights never become production unless test models are allowed).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from pipelines.training.steps._common import StepError, answer


def main(argv: list[str] | None = None) -> int:
    from pipelines.training.tiny import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, help="folder whose tokenizer the model uses (not for tiny)")
    ap.add_argument("--data-dir", type=Path, help="tiny: staged records to train the tokenizer on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from pipelines.training.tiny import build_random_llama, build_tiny_llama, sample_corpus

    if args.shape == "tiny":
        path = build_tiny_llama(args.out, sample_corpus(args.data_dir), vocab_size=512, seed=args.seed)
        answer(json.loads((path / "cbnano_base.json").read_text()))
        return 0
    if args.tokenizer is None or not (args.tokenizer / "tokenizer_config.json").is_file():
        raise StepError(f"--shape {args.shape} needs --tokenizer, a folder with tokenizer_config.json")
    answer(build_random_llama(args.out, args.tokenizer, args.shape, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
