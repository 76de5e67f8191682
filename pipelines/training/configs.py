"""axolotl configs: render profile + domain overlay + run values, and validate before any GPU time.

``axolotl_configs/<profile>.yml`` is the hardware profile (``tiny``, ``cpu_lora``, ``gpu_qlora``);
``axolotl_configs/domains/<domain>.yml`` the domain overlay; run values (base model, dataset paths, output
folder, seed, step cap) come last. Later layers win; nested mappings merge.

Validation runs in the training environment (axolotl's pinned stack cannot be imported here):
:func:`validate_in_train_env` loads the rendered YAML there, rejects every top-level key that axolotl's
schema (``AxolotlInputConfig``) does not know — axolotl would drop it silently — and runs axolotl's own
``validate_config``. It returns the problems as a list; empty means the config is good.

A profile may also hold a ``cbnano:`` section: recipe steps cbnano itself runs around axolotl (today
``adapter_scale``, see :func:`adapter_scale`). It is part of the config's hash, so it decides the run folder
and the version like any key, but :func:`write_config` leaves it out of the file axolotl reads, and
:func:`render_config` checks it, since axolotl's schema never sees it.
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
    adapter_scale(cfg)  # a bad value of our own section fails here, before any dataset or training
    return cfg


OWN = "cbnano"  # the config's section for cbnano's own recipe steps; axolotl never sees it
OWN_KEYS = ("adapter_scale",)


def own_section(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config's ``cbnano:`` section (empty when it has none); raises ValueError for an unknown key."""
    own = cfg.get(OWN) or {}
    if not isinstance(own, dict):
        raise ValueError(f"{OWN}: must be a mapping, got {own!r}")
    unknown = sorted(set(own) - set(OWN_KEYS))
    if unknown:
        raise ValueError(f"{OWN}: unknown key(s) {', '.join(unknown)}; known: {', '.join(OWN_KEYS)}")
    return dict(own)


def adapter_scale(cfg: dict[str, Any]) -> float:
    """``cbnano.adapter_scale``: the share of the trained LoRA delta the candidate keeps (1.0, all of it, by
    default). Below 1 the trained adapter is moved that far back towards the base before it is merged,
    evaluated and published (``steps.interpolate``). Raises ValueError outside (0, 1]."""
    value = own_section(cfg).get("adapter_scale", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{OWN}.adapter_scale must be a number in (0, 1], got {value!r}")
    return float(value)


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the config's canonical JSON (what decides the run folder)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """Write the rendered config as YAML for axolotl (without the ``cbnano:`` section), with a header saying
    how to launch it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Rendered by cbnano. Launch: .venv-train/bin/axolotl train {path} --launcher python\n"
    body = yaml.safe_dump({k: v for k, v in cfg.items() if k != OWN}, sort_keys=False)
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
