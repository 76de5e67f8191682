"""axolotl configs: render profile + domain overlay + run values, and validate before any GPU time.

``axolotl_configs/<profile>.yml`` is the hardware profile (``tiny``, ``cpu_lora``, ``gpu_qlora``);
``axolotl_configs/domains/<domain>.yml`` the domain overlay; run values (base model, dataset paths, output
folder, seed, step cap) come last. Later layers win; nested mappings merge.

Validation runs in the training environment (axolotl's pinned stack cannot be imported here):
:func:`validate_in_train_env` loads the rendered YAML there, rejects every top-level key that axolotl's
schema (``AxolotlInputConfig``) does not know — axolotl would drop it silently — and runs axolotl's own
``validate_config``. It returns the problems as a list; empty means the config is good.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.assets import asset
from pipelines.settings import DOMAINS
from pipelines.settings import TRAIN_PROFILES as PROFILES


def config_dir() -> Path:
    """``axolotl_configs/``: one base per hardware profile, one overlay per domain under ``domains/``."""
    return asset("axolotl_configs")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: nested dicts merge, everything else (lists included) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping (an empty file is an empty mapping)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return data


def render_config(
    profile: str, domain: str, run: dict[str, Any], configs: Path | None = None
) -> dict[str, Any]:
    """The full axolotl config for one run; raises ValueError for an unknown profile or domain."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    folder = configs or config_dir()
    cfg = deep_merge(load_yaml(folder / f"{profile}.yml"), load_yaml(folder / "domains" / f"{domain}.yml"))
    cfg = deep_merge(cfg, run)
    if not cfg.get("base_model"):
        raise ValueError(f"profile {profile}: no base_model (give one in the run values)")
    return cfg


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the config's canonical JSON (what decides the run folder)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """Write the rendered config as YAML, with a header saying how to launch it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Rendered by cbnano. Launch: .venv-train/bin/axolotl train {path} --launcher python\n"
    body = yaml.safe_dump(cfg, sort_keys=False)
    path.write_text(header + body)
    return path


def validate_in_train_env(paths: list[Path], train_python: str, timeout_s: float = 300) -> list[str]:
    """Problems found by axolotl's schema and validation for each config file (``steps.validate_config``)."""
    from pipelines.trainenv import run_step

    return list(run_step(train_python, "validate_config", [str(p) for p in paths], timeout_s=timeout_s))


def lora_rank(profile: str) -> int:
    """``lora_r`` of an axolotl profile (0 when the profile has none or cannot be read)."""
    try:
        cfg = load_yaml(config_dir() / f"{profile}.yml")
    except OSError:
        return 0
    return int(cfg.get("lora_r") or 0)
