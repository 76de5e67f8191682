"""docker-compose.airflow.yml, checked against what the code and the DAGs actually use.

There is no Docker engine on the development machines, so the file is never started here; tests/cluster runs
the same topology natively. These tests keep the file consistent with the DAGs' queues and pools, the
settings the code reads, the image definitions and the NFS layout.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.airflow.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = [n for n, s in SERVICES.items() if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})]
WORKERS = {n: s for n, s in SERVICES.items() if str(s.get("command", "")).startswith("celery worker")}


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def mounts(service: str) -> dict[str, str]:
    """container path -> volume or host path"""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def queue_of(worker: str) -> str:
    return re.search(r"--queues (\S+)", WORKERS[worker]["command"]).group(1)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    return bag


def test_the_official_layout_is_there():
    expected = {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "worker-default",
        "worker-system-b",
        "worker-system-c",
        "milvus-etcd",
        "milvus-minio",
        "milvus-standalone",
        "attu",
    }
    assert expected <= set(SERVICES)
    assert "x-airflow-common" in COMPOSE
    for name in AIRFLOW_SERVICES:
        e = env(name)
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:"), name
        assert e["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith(":8080/execution/"), name
        assert "JWT_SECRET" in e["AIRFLOW__API_AUTH__JWT_SECRET"]  # from the env file, never a literal
    for name in [
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "milvus-etcd",
        "milvus-minio",
        "milvus-standalone",
        *WORKERS,
    ]:
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["attu"]["profiles"] == ["attu"]


def test_every_queue_the_dags_use_has_a_worker_and_gpus_where_needed(dagbag):
    used = {t.queue for dag in dagbag.dags.values() for t in dag.tasks}
    served = {queue_of(w): w for w in WORKERS}
    assert used <= set(served), f"queues without a worker: {used - set(served)}"
    assert served["system_b"] == "worker-system-b" and served["system_c"] == "worker-system-c"
    for worker in ("worker-system-b", "worker-system-c"):
        devices = SERVICES[worker]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"], worker
    assert env("worker-system-c")["CBNANO_EMBEDDING_DEVICE"] == "cuda"
    assert "gpu" not in json.dumps(SERVICES["worker-default"].get("deploy", {}))


def test_system_b_runs_the_training_image_with_one_job_per_gpu_slot(dagbag):
    b = SERVICES["worker-system-b"]
    assert b["build"]["dockerfile"] == "train.Dockerfile"
    dockerfile = (ROOT / "train.Dockerfile").read_text()
    train_python = env("worker-system-b")["CBNANO_TRAIN_PYTHON"]
    assert train_python.startswith("/opt/train-venv/") and "python -m venv /opt/train-venv" in dockerfile
    assert "requirements-train.txt" in dockerfile and "torch==2.13.0" in dockerfile
    pools = json.loads((ROOT / "include/airflow/pools.json").read_text())
    concurrency = re.search(r"--concurrency \$\{SYSTEM_B_GPU_COUNT:-(\d+)\}", b["command"]).group(1)
    assert int(concurrency) == pools["system_b_gpu"]["slots"] == 2
    assert env("worker-system-b")["CBNANO_GPUS"] == "${SYSTEM_B_GPU_COUNT:-2}"


def test_celery_visibility_timeout_outlasts_the_longest_task(dagbag):
    visibility = int(env("airflow-scheduler")["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
    timeouts = [
        t.execution_timeout.total_seconds()
        for d in dagbag.dags.values()
        for t in d.tasks
        if t.execution_timeout
    ]
    retrain = dagbag.dags["domain_retraining"].get_task("retrain_domain")
    assert retrain.execution_timeout is not None  # a fine-tune is bounded, so the timeout can be above it
    assert visibility > max(timeouts)
    assert (
        "longest" in COMPOSE_TEXT.split("VISIBILITY_TIMEOUT")[0].rsplit("\n\n", 1)[-1]
    )  # the comment says why


def test_pools_and_connections_are_created_at_init(dagbag):
    init = SERVICES["airflow-init"]["command"][-1]
    assert (
        "airflow db migrate" in init
        and "airflow pools import /opt/airflow/include/airflow/pools.json" in init
    )
    assert mounts("airflow-init")["/opt/airflow/include"] == "./include"
    pools = json.loads((ROOT / "include/airflow/pools.json").read_text())
    assert pools["arxiv_api"]["slots"] == 1 and pools["pubchem_api"]["slots"] >= 1
    used = {t.pool for d in dagbag.dags.values() for t in d.tasks} - {"default_pool"}
    assert used <= set(pools)
    assert "airflow connections add cbnano_milvus" in init


def test_nfs_exports_are_mounted_where_the_settings_point():
    volumes = COMPOSE["volumes"]
    for name, export in [
        ("nfs-models", "/exports/models"),
        ("nfs-datasets", "/exports/datasets"),
        ("nfs-checkpoints", "/exports/checkpoints"),
    ]:
        opts = volumes[name]["driver_opts"]
        assert opts["type"] == "nfs" and opts["device"] == f":{export}" and "ae86" in opts["o"]
    paths = {
        "CBNANO_MODEL_STORE": "nfs-models",
        "CBNANO_DATA_DIR": "nfs-datasets",
        "CBNANO_RUNS_DIR": "nfs-checkpoints",
    }
    # ingestion (default, system_c) needs the lake; training needs all three; the UI reads the model store
    needs = {
        "worker-default": ["CBNANO_DATA_DIR"],
        "worker-system-c": ["CBNANO_DATA_DIR"],
        "worker-system-b": list(paths),
        "airflow-apiserver": ["CBNANO_MODEL_STORE"],
    }
    for service, keys in needs.items():
        for key in keys:
            assert mounts(service).get(env(service)[key]) == paths[key], (service, key)


def test_cbnano_variables_are_ones_the_code_reads_and_every_variable_is_documented():
    code = "".join(
        p.read_text()
        for p in [*ROOT.glob("pipelines/**/*.py"), *ROOT.glob("dags/*.py"), *ROOT.glob("plugins/**/*.py")]
    )
    read = set(re.findall(r'"(CBNANO_[A-Z_]+)"', code))
    for service in AIRFLOW_SERVICES:
        for key in env(service):
            if key.startswith("CBNANO_"):
                assert key in read, f"{service} sets {key}, which no code reads"
    header = COMPOSE_TEXT.split("\nname:")[0]
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)[:}?-]", COMPOSE_TEXT))  # $${X}: the container shell's
    undocumented = {v for v in used if not re.search(rf"#\s+(\S+ / )*{v}\b", header)}
    assert not undocumented, f"variables missing from the header: {sorted(undocumented)}"


def test_versions_agree_with_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    airflow_pin = next(
        d for d in project["optional-dependencies"]["airflow"] if d.startswith("apache-airflow")
    )
    airflow_version = airflow_pin.split("==")[1]
    assert f"FROM apache/airflow:{airflow_version}-python3.11" in (ROOT / "airflow.Dockerfile").read_text()
    assert SERVICES["worker-default"]["image"] == "${AIRFLOW_IMAGE:-cbnano/airflow:" + airflow_version + "}"
    pymilvus = next(d for d in project["dependencies"] if d.startswith("pymilvus==")).split("==")[1]
    milvus_tag = SERVICES["milvus-standalone"]["image"].split(":v")[1]
    assert milvus_tag.split(".")[0] == pymilvus.split(".")[0]  # pymilvus 3.x talks to Milvus 3.x
    assert env("worker-default")["CBNANO_MILVUS_URI"].endswith(":19530")


def test_system_c_serves_search_with_a_token_and_a_health_check():
    svc = SERVICES["search-service"]
    assert svc["profiles"] == ["system-c"]
    cmd = svc["command"]
    assert cmd[:4] == ["python", "-m", "pipelines.cli", "search-service"]
    port = cmd[cmd.index("--port") + 1]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and svc["ports"] == ["${SEARCH_PORT:-8600}:" + port]
    assert env("search-service")["CBNANO_SEARCH_TOKEN"] == "${SEARCH_TOKEN:?}"  # never open by accident
    assert env("search-service")["CBNANO_MILVUS_URI"] == env("worker-system-c")["CBNANO_MILVUS_URI"]
    assert f"http://localhost:{port}/healthz" in svc["healthcheck"]["test"]
    from pipelines.cli import build_parser

    args = build_parser().parse_args(cmd[3:])
    assert (args.host, args.port) == ("0.0.0.0", int(port))
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["${SYSTEM_C_GPU:-0}"]


def test_system_a_serves_vllm_with_runtime_lora_from_the_read_only_store():
    svc = SERVICES["vllm"]
    assert svc["profiles"] == ["system-a"]
    args = svc["command"]
    assert svc["entrypoint"] == ["vllm", "serve"] and args[0] == "/exports/models/base/${BASE_MODEL:?}"
    assert args[args.index("--served-model-name") + 1] == "${BASE_MODEL:?}"
    assert "--enable-lora" in args and int(args[args.index("--max-loras") + 1]) >= 4
    assert args[args.index("--api-key") + 1] == "${SYSTEM_A_TOKEN:?}"
    assert "--enable-auto-tool-choice" in args and args[args.index("--tool-call-parser") + 1].endswith(
        ":-hermes}"
    )
    assert svc["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # the store is mounted read-only where the platform's model store is, so the adapter paths it sends work
    assert "nfs-models:/exports/models:ro" in svc["volumes"]
    assert env("worker-system-b")["CBNANO_MODEL_STORE"] == "/exports/models"
    port = args[args.index("--port") + 1]
    assert f"http://localhost:{port}/health" in " ".join(svc["healthcheck"]["test"])
    assert svc["ports"] == ["${SYSTEM_A_PORT:-8000}:" + port]
    # the platform knows where System A is, from the environment and from the Connection the init creates
    assert env("worker-system-b")["CBNANO_SYSTEM_A_URL"] == "${SYSTEM_A_URL:-}"
    init = " ".join(SERVICES["airflow-init"]["command"])
    assert "connections add cbnano_system_a" in init and "CBNANO_SYSTEM_A_TOKEN" in init


def test_the_airflow_image_installs_the_package_by_host_role_with_its_data_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dockerfile = (ROOT / "airflow.Dockerfile").read_text()
    extras = next(line for line in dockerfile.splitlines() if line.startswith("ARG EXTRAS="))
    assert set(extras.split("=", 1)[1].split(",")) == {"airflow", "system-b", "system-c"}
    assert set(extras.split("=", 1)[1].split(",")) <= set(project["optional-dependencies"])
    assert 'pip install --no-cache-dir "/opt/cbnano-src[${EXTRAS}]"' in dockerfile  # regular, not -e
    assert "CBNANO_ASSETS_DIR=/opt/cbnano-src" in dockerfile
    for folder in ("include", "axolotl_configs", "pipelines"):
        assert f"COPY --chown=airflow:0 {folder} /opt/cbnano-src/{folder}" in dockerfile


def test_system_a_runs_the_gateway_in_front_of_vllm_with_traces_in_the_coordinators_postgres():
    svc = SERVICES["gateway"]
    assert svc["profiles"] == ["system-a"]
    cmd = svc["command"]
    assert cmd[:4] == ["python", "-m", "pipelines.cli", "gateway"]
    from pipelines.cli import build_parser

    args = build_parser().parse_args(cmd[3:])
    assert (args.host, args.port, args.no_auth) == ("0.0.0.0", 9000, False)  # keys required in the lab
    assert svc["ports"] == ["${GATEWAY_PORT:-9000}:9000"]
    assert "http://localhost:9000/health" in svc["healthcheck"]["test"]
    gw = env("gateway")
    vllm_port = SERVICES["vllm"]["command"][SERVICES["vllm"]["command"].index("--port") + 1]
    assert gw["CBNANO_SYSTEM_A_URL"] == f"http://vllm:{vllm_port}"
    assert gw["CBNANO_SYSTEM_A_TOKEN"] == "${SYSTEM_A_TOKEN:?}"
    airflow_db = env("worker-default")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert gw["CBNANO_GATEWAY_DB"] == airflow_db  # the coordinator's Postgres, tables gateway_*
    broker = env("worker-default")["AIRFLOW__CELERY__BROKER_URL"]
    assert gw["CBNANO_GATEWAY_CACHE"] == broker.removesuffix("/0") + "/1"  # the lab's Redis, not Celery's db
    assert {"CBNANO_GATEWAY_RPM", "CBNANO_GATEWAY_TOKENS_PER_DAY", "CBNANO_GATEWAY_MAX_INFLIGHT"} <= set(gw)
    assert svc["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_gateway_with_a_key_and_grafana_has_its_row():
    prom = yaml.safe_load((ROOT / "include/monitoring/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "gateway")
    assert job["static_configs"][0]["targets"] == ["gateway:9000"] and job["metrics_path"] == "/metrics"
    secret = job["authorization"]["credentials_file"].rsplit("/", 1)[-1]
    assert secret in SERVICES["prometheus"]["secrets"]
    assert COMPOSE["secrets"][secret] == {"environment": "GATEWAY_METRICS_TOKEN"}
    # every series the dashboard's gateway row asks for is one the gateway exposes
    from prometheus_client import generate_latest

    from pipelines.gateway.tracing import Metrics

    m = Metrics()
    m.requests.labels("chat", "catalysis", "200").inc()
    m.latency.labels("chat", "catalysis").observe(0.1)
    m.tokens.labels("catalysis", "in").inc(3)
    exposed = generate_latest(m.registry).decode()
    dash = json.loads((ROOT / "include/monitoring/grafana/dashboards/cbnano.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] if "Gateway" in p["title"] for t in p.get("targets", [])]
    assert len(exprs) >= 4
    for series in {s for e in exprs for s in re.findall(r"cbnano_gateway_[a-z_]+", e)}:
        assert series in exposed, series
