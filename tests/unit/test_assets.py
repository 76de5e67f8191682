"""The data files (include/, axolotl_configs/) are found through CBNANO_ASSETS_DIR, else the checkout."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.assets import ASSETS_ENV, assets_dir, watchlist_rows

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_default_is_the_checkout_and_the_setting_overrides_it(tmp_path):
    assert assets_dir({}) == ROOT
    assert assets_dir({ASSETS_ENV: str(tmp_path)}) == tmp_path.resolve()


def test_a_copied_assets_folder_is_used_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "pubchem_watchlist.csv").write_text("name,domain\nwater,chemistry\n ,\n")
    probe = (
        "from pipelines.ingestion.pubchem import load_watchlist; from pipelines.training.configs import config_dir;"
        "print(load_watchlist(), config_dir())"
    )
    env = {"PATH": "/usr/bin:/bin", ASSETS_ENV: str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["['water']", str(tmp_path / "axolotl_configs")], out.stderr
    env[ASSETS_ENV] = str(tmp_path / "nowhere")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and f"set {ASSETS_ENV}" in out.stderr


def test_watchlist_rows_need_a_name_column(tmp_path):
    bad = tmp_path / "w.csv"
    bad.write_text("compound,domain\nwater,chemistry\n")
    with pytest.raises(ValueError, match="'name' column"):
        watchlist_rows(bad)
    assert {"name": "titanium dioxide", "domain": "catalysis"} in watchlist_rows()
