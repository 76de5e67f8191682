"""The Airflow UI as scientists use it, in a real browser: Debian's chromium driven by Playwright.

`airflow standalone` on loopback with this project's DAGs and plugin, the arXiv/PubChem endpoints replayed
locally. Logs in, fills `literature_ingestion`'s trigger form, triggers, waits for the run to succeed, then
(after a tiny retrain publishes a catalysis model) opens the model registry page. Screenshots go to
``test-output/browser/`` (git-ignored). Needs the Debian package chromium (scripts/system_deps.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = ROOT / "test-output" / "browser"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-admin"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system_deps.sh (make test does)")
    from pipelines.replay import ReplayServer

    work = tmp_path_factory.mktemp("ui")
    replay = ReplayServer(
        corpus=[ROOT / "include/samples/arxiv"], pubchem_dir=ROOT / "include/samples/pubchem"
    )
    replay.start()
    port = _free_port()
    home = work / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CBNANO_"))},
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "CBNANO_HOME": str(work / "cbnano"),
        "CBNANO_ARXIV_API_URL": replay.arxiv_api_url,
        "CBNANO_ARXIV_DELAY_S": "0",
        "CBNANO_PUBCHEM_URL": replay.pubchem_url,
        "HF_HUB_OFFLINE": "1",
        "CBNANO_ALLOW_TEST_MODELS": "1",
    }  # the tiny model below may become production here
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [str(BIN / "airflow"), "pools", "import", str(ROOT / "include/airflow/pools.json")],
        env=env,
        check=True,
        capture_output=True,
    )
    log = open(work / "standalone.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=work,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{base}/api/v2/monitor/health", timeout=2).ok, 240, "airflow standalone")
        token = requests.post(
            f"{base}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=10
        ).json()["access_token"]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        _wait(lambda: api.get(f"{base}/api/v2/dags/literature_ingestion", timeout=5).ok, 180, "DAGs parsed")
        yield {"base": base, "api": api, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        replay.stop()
        print((work / "standalone.log").read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def page(airflow_ui):
    from playwright.sync_api import sync_playwright

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def test_log_in_trigger_from_the_form_and_see_the_registry(airflow_ui, page):
    base, api = airflow_ui["base"], airflow_ui["api"]

    # Airflow's own login form
    page.goto(base + "/")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("button[type=submit]").click()
    page.wait_for_url(base + "/")

    # literature_ingestion's trigger form: typed fields, filled in as a scientist would
    page.goto(base + "/dags/literature_ingestion")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("arXiv categories").first.wait_for()
    assert dialog.locator("#element_window_start").get_attribute("type") == "date"
    dialog.locator("#element_window_start").fill("2026-11-23")
    dialog.locator("#element_window_end").fill("2026-11-27")
    page.screenshot(path=OUT / "trigger_form.png")
    dialog.get_by_role("button", name="Trigger", exact=True).click()

    def the_run():
        runs = api.get(f"{base}/api/v2/dags/literature_ingestion/dagRuns", timeout=10).json()["dag_runs"]
        return runs[0] if runs else None

    run = _wait(the_run, 60, "the triggered run")
    assert run["run_type"] == "manual"
    assert run["conf"]["window_start"] == "2026-11-23" and run["conf"]["window_end"] == "2026-11-27"
    done = _wait(
        lambda: (r := the_run()) and r["state"] in ("success", "failed") and r, 420, "the run finishing"
    )
    assert done["state"] == "success"
    page.goto(f"{base}/dags/literature_ingestion/runs/{run['dag_run_id']}")
    page.wait_for_timeout(2000)
    page.screenshot(path=OUT / "run_succeeded.png")

    # the run's report, on the plugin's Ingestion runs page
    page.goto(base + "/cbnano/ingestion")
    assert "arxiv" in page.inner_text("table") and "2026-11-23" in page.inner_text("table")
    page.screenshot(path=OUT / "ingestion_runs.png", full_page=True)

    # publish a catalysis model with the tiny profile (the same code as domain_retraining), then the registry
    env = airflow_ui["env"]
    subprocess.run(
        [str(BIN / "cbnano"), "ingest", "pubchem", "--watchlist", "--dry-run", "--day", "2026-11-26"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [
            str(BIN / "cbnano"),
            "retrain",
            "--domain",
            "catalysis",
            "--profile",
            "tiny",
            "--month",
            "2026-11",
            "--max-steps",
            "4",
            "--min-gain",
            "-1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["published"] is True, summary["reason"]

    page.goto(base + "/plugin/cbnano-registry")  # the menu entry: the registry inside Airflow's UI
    frame = page.frame_locator("iframe").first
    frame.locator(f"table[data-version='{summary['version']}']").wait_for()
    assert "(production)" in frame.locator(f"table[data-version='{summary['version']}']").inner_text()
    assert "95% CI" in frame.locator("table.ci").first.inner_text()  # the gate's intervals
    frame.locator("img[alt='evaluation chart']").first.wait_for()
    page.screenshot(path=OUT / "model_registry.png", full_page=True)

    # read-only and behind Airflow's auth: no session, no page
    assert requests.get(base + "/cbnano/", timeout=10).status_code == 401
    assert requests.post(base + "/cbnano/", timeout=10).status_code in (401, 405)
