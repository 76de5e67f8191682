"""Where a base model lives in the model store, and whether a folder is one: what training, ``ask`` and the
serving hand-off all need, below every one of them.

A base is named by a setting (``CBNANO_BASE_MODEL``): a name under the store's ``base/`` folder, or a model
folder elsewhere (its folder name is then its name, and ``base/bases.json`` records where it lives).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.publishing.model_store import ModelStore, ModelStoreError
from pipelines.settings import Settings

BASE_MANIFEST = "cbnano_base.json"


class BaseModelMissing(ValueError):
    """No usable base model; the message names the setting to fix."""


@dataclass(frozen=True)
class BaseModel:
    """A base model: its store name (what adapters and cards say), its folder here, and whether it is a
    random-init test model."""

    name: str
    path: Path
    test_model: bool


def _usable(path: Path) -> str | None:
    """Why ``path`` is not a model folder a run can use, or None."""
    if not path.is_dir():
        return f"no folder at {path}"
    if not (path / "config.json").is_file():
        return f"no config.json in {path}"
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return f"no tokenizer in {path}"
    return None


def _describe(name: str, path: Path) -> BaseModel:
    try:
        meta = json.loads((path / BASE_MANIFEST).read_text())
    except (OSError, ValueError):
        meta = {}
    return BaseModel(name, path, bool(meta.get("test_model")))


def locate_base(settings: Settings, value: str, what: str) -> BaseModel:
    """The base ``value`` names (a store name or a folder); ``what`` says where the value came from.

    Raises :class:`BaseModelMissing` when it is not a usable model folder.
    """
    store = ModelStore(settings.model_store)
    looks_like_path = "/" in value or value.startswith(".") or value.startswith("~")
    try:
        if looks_like_path:
            path = Path(value).expanduser().resolve()
            inside = (settings.model_store / "base").resolve()
            name = path.relative_to(inside).as_posix() if path.is_relative_to(inside) else path.name
        else:
            name, path = value, store.base_dir(value)
    except ModelStoreError as exc:
        raise BaseModelMissing(f"{what}={value!r}: {exc}") from None
    problem = _usable(path)
    if problem:
        hint = (
            ""
            if looks_like_path
            else " (import it, e.g. `cbnano models import-base smollm2`, or give a folder)"
        )
        raise BaseModelMissing(f"{what}={value!r} is not a usable base model: {problem}{hint}")
    if looks_like_path and not path.is_relative_to((settings.model_store / "base").resolve()):
        try:
            store.register_base(name, path)
        except ModelStoreError as exc:
            raise BaseModelMissing(f"{what}={value!r}: {exc}") from None
    return _describe(name, path)
