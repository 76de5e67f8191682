"""The package as a wheel, not the checkout: the host-role extras hold torch and friends, the core imports
without them, and the data files are read through CBNANO_ASSETS_DIR (as the Airflow image's regular install)."""

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sentence_transformers", "matplotlib", "tokenizers", "fastapi")

# Blocks the extras' modules, then uses the core as the Airflow scheduler and the fetch/stage tasks do.
PROBE = f"""
import sys
for name in {HEAVY!r}:
    sys.modules[name] = None  # an import of it raises ImportError
import pipelines
assert not pipelines.__file__.startswith({str(ROOT)!r}), pipelines.__file__
from pipelines import cli, lake, reports
from pipelines.ingestion import arxiv, pubchem
from pipelines.publishing.model_store import ModelStore
from pipelines.training import retrain
from pipelines.training.configs import render_config
from pipelines.ingestion.pubchem import load_watchlist
cfg = render_config("gpu_qlora", "thermal", {{"base_model": "/m"}})
print(cfg["adapter"], len(load_watchlist()) > 0)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("cbnano_platform-*.whl")
    site = out / "site"
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)
    return whl, site


def test_torch_and_friends_are_extras_not_core(wheel):
    whl, _ = wheel
    with zipfile.ZipFile(whl) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
        names = zf.namelist()
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    for pkg in ("torch", "transformers", "sentence-transformers", "matplotlib", "apache-airflow"):
        assert not any(r.startswith(pkg) for r in core), (pkg, core)
    assert any(r.startswith("torch==") and 'extra == "system-c"' in r for r in requires)
    assert any(r.startswith("matplotlib") and 'extra == "system-b"' in r for r in requires)
    assert set(meta.get_all("Provides-Extra")) >= {"system-b", "system-c", "airflow", "dev"}
    assert not any(n.startswith(("include/", "tests/", "dags/")) for n in names)


def test_the_installed_core_runs_without_extras_and_finds_the_data_files_by_setting(wheel, tmp_path):
    _, site = wheel
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "CBNANO_HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "CBNANO_ASSETS_DIR": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["qlora", "True"]
    missing = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "set CBNANO_ASSETS_DIR" in missing.stderr
