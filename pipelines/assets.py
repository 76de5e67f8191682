"""The platform's data files: ``include/`` (domains, eval sets, golden retrieval set, watch list, samples) and
``axolotl_configs/``, found through one setting.

``CBNANO_ASSETS_DIR`` names the folder that holds both (the source checkout, or the copy an image ships); by
default it is the checkout this package was installed from in editable mode. A non-editable install has no
checkout beside it, so such a deployment sets the variable (the Dockerfiles do). Read once, at import.

    from pipelines.assets import asset
    asset("include", "domains.yaml")      # -> Path
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

ASSETS_ENV = "CBNANO_ASSETS_DIR"


class AssetsMissing(FileNotFoundError):
    """The assets folder has no ``include/``; the message says which folder and what to set."""


def assets_dir(env: dict[str, str] | None = None) -> Path:
    """The folder holding ``include/`` and ``axolotl_configs/``: ``CBNANO_ASSETS_DIR``, else the checkout."""
    raw = (os.environ if env is None else env).get(ASSETS_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else Path(__file__).resolve().parents[1]


ROOT = assets_dir()


def asset(*parts: str) -> Path:
    """A path under the assets folder; raises :class:`AssetsMissing` when that folder has no ``include/``."""
    if not (ROOT / "include").is_dir():
        raise AssetsMissing(
            f"{ROOT} has no include/ folder: set {ASSETS_ENV} to the folder holding the platform's include/ "
            "and axolotl_configs/ (its source checkout)"
        )
    return ROOT.joinpath(*parts)


def watchlist_rows(path: Path | None = None) -> list[dict[str, str]]:
    """The PubChem watch list (``include/pubchem_watchlist.csv``) as rows with ``name`` and ``domain``, in
    file order, blank names skipped; raises ValueError when the file has no ``name`` column."""
    path = path or asset("include", "pubchem_watchlist.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "name" not in reader.fieldnames:
            raise ValueError(f"{path}: the watch list needs a 'name' column")
        return [
            {"name": row["name"].strip(), "domain": (row.get("domain") or "").strip()}
            for row in reader
            if (row.get("name") or "").strip()
        ]
