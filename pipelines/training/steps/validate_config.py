"""Validate rendered axolotl configs with axolotl's own schema before any GPU time is spent.

    .venv-train/bin/python -m pipelines.training.steps.validate_config var/runs/<run>/config.rendered.yml ...

For each file: every top-level key must be one axolotl's ``AxolotlInputConfig`` knows (axolotl silently drops
the others: a typo such as ``learning_rat`` would train with the default), then axolotl's ``validate_config``
runs, and a packed config must use an attention that keeps packed examples apart (axolotl's own
``attn_decontaminates_packing``). Prints one JSON line: the list of problems (empty when every config is good).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from pipelines.training.steps._common import answer


def problems_of(path: Path) -> list[str]:
    """What axolotl would drop or reject in one config file."""
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.config import AxolotlInputConfig

    cfg = yaml.safe_load(path.read_text())
    known = set(AxolotlInputConfig.model_fields)
    known |= {f.alias for f in AxolotlInputConfig.model_fields.values() if f.alias}
    unknown = sorted(set(cfg) - known)
    if unknown:
        return [f"{path}: keys axolotl would silently drop: {', '.join(unknown)}"]
    try:
        checked = validate_config(DictDefault(cfg))
    except Exception as exc:  # axolotl raises ValueError, pydantic's ValidationError and others
        return [f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"]
    if checked.get("sample_packing") and not checked.get("attn_decontaminates_packing"):
        return [
            f"{path}: sample_packing with attention {checked.get('attn_implementation')!r} lets packed examples "
            "attend to each other; set a packing-safe attn_implementation (sdpa, flash_attention_2, ...) "
            "or turn packing off"
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    answer([p for path in args.configs for p in problems_of(path)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
