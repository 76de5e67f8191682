"""The lab's Airflow topology on one machine, without Docker: what docker-compose.airflow.yml runs, natively.

PostgreSQL and Redis from Debian's packages on loopback, Airflow 3 on CeleryExecutor with a scheduler, a
dag-processor, an API server and one Celery worker per queue (``default``, ``system_b``, ``system_c``). Each
worker runs in its own UTS namespace (``unshare --uts``) with the lab host's name, so task instances record
the host that ran them exactly as on separate machines. Ports are chosen free; ``stop()`` ends everything.

Needs root (``unshare``, and Postgres run as the ``postgres`` user) and the Debian packages that
``scripts/system_deps.sh`` installs. Used by ``tests/cluster/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
ADMIN_PASSWORD = "lab-admin"


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call ``check()`` until it returns something truthy; returns it, or raises naming ``what``.

    Exceptions from ``check`` count as "not yet", except RuntimeError (a service died), which is raised.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except RuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 (the service is still starting)
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last_error})")


class NativeLab:
    """Start and stop the lab's services as local processes; ``env`` is what every Airflow process sees."""

    WORKERS = {"default": "coordinator", "system_b": "system-b", "system_c": "system-c"}

    def __init__(self, cbnano_env: dict[str, str]) -> None:
        # Postgres runs as the `postgres` user, which cannot enter pytest's 0700 tmp folders.
        self.dir = Path(tempfile.mkdtemp(prefix="cbnano-lab-"))
        self.dir.chmod(0o755)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.pg_data = self.dir / "pgdata"
        db = f"airflow:airflow@127.0.0.1:{self.pg_port}/airflow"
        home = self.dir / "airflow"
        home.mkdir()
        (home / "passwords.json").write_text(json.dumps({"admin": ADMIN_PASSWORD}))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CBNANO_"))},
            **cbnano_env,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "native-lab-" + os.urandom(8).hex(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            # manual and API-triggered runs only: unpausing a DAG must not start its scheduled runs here
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # a worker that vanishes is noticed in seconds rather than the default 5 minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "CBNANO_RETRY_DELAY_S": "5",
        }
        self.session = requests.Session()

    # ---- services -------------------------------------------------------------------------------------
    def _run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, **kw)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr[-2000:]}")
        return out

    def spawn(
        self, name: str, argv: list[str], hostname: str | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (so it can be killed with all it started), logging to a file."""
        if hostname:  # its own UTS namespace: the process and its children see this host name
            argv = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *argv]
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the process's life)
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
        )
        self.procs[name] = proc
        return proc

    def start_postgres(self) -> None:
        shutil.chown(self.dir, "postgres")
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(self.pg_data),
                "-U",
                "airflow",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.spawn(
            "postgres",
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "postgres"),
                "-D",
                str(self.pg_data),
                "-p",
                str(self.pg_port),
                "-k",
                str(self.pg_data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
        )
        wait_for(
            lambda: (
                subprocess.run(
                    [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)],
                    capture_output=True,
                ).returncode
                == 0
            ),
            30,
            "postgres",
        )
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "airflow",
                "airflow",
            ],
            check=True,
            capture_output=True,
        )

    def start_redis(self) -> None:
        self.spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_for(pong, 30, "redis")

    def init_airflow(self) -> None:
        """What the compose file's airflow-init does: migrate the DB, create the pools."""
        self._run([str(BIN / "airflow"), "db", "migrate"], timeout=600)
        self._run([str(BIN / "airflow"), "pools", "import", str(ROOT / "include/airflow/pools.json")])

    def start_worker(self, queue: str) -> subprocess.Popen[bytes]:
        host = self.WORKERS[queue]
        return self.spawn(
            f"worker-{queue}",
            [
                str(BIN / "airflow"),
                "celery",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                "1",
                "--celery-hostname",
                f"{queue}@{host}",
                "--without-gossip",
                "--without-mingle",
            ],
            hostname=host,
            extra_env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )

    def start(self) -> NativeLab:
        self.start_postgres()
        self.start_redis()
        self.init_airflow()
        self.spawn("api-server", [str(BIN / "airflow"), "api-server", "--port", str(self.api_port)])
        self.spawn("scheduler", [str(BIN / "airflow"), "scheduler"])
        self.spawn("dag-processor", [str(BIN / "airflow"), "dag-processor"])
        for queue in self.WORKERS:
            self.start_worker(queue)
        wait_for(
            lambda: self.session.get(self.url("/api/v2/monitor/health"), timeout=2).ok, 180, "api-server"
        )
        token = self.session.post(
            self.url("/auth/token"), json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=10
        )
        token.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return self

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything it started, as when its host dies."""
        import psutil

        proc = self.procs.pop(name)
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in family:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "postgres"]:
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name in [n for n in self.procs if n != "postgres"]:
            try:
                self.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)
        if "postgres" in self.procs:
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.pg_data),
                    "stop",
                    "-m",
                    "fast",
                ],
                capture_output=True,
            )
            self.procs["postgres"].wait(timeout=30)
        self.procs.clear()

    def check_alive(self) -> None:
        """Raise, with its log's tail, if a service has exited (a crash would otherwise look like a hang)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- REST API ---------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.session.request(method, self.url(path), timeout=30, **kw)
        if not resp.ok:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        wait_for(
            lambda: self.session.get(self.url(f"/api/v2/dags/{dag_id}"), timeout=5).ok,
            timeout,
            f"DAG {dag_id} parsed",
        )

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause ``dag_id`` and trigger a manual run with ``conf``; returns the run id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {
            f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]: ti for ti in tis
        }

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        def finished() -> str | None:
            self.check_alive()
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            return state if state in ("success", "failed") else None

        return str(wait_for(finished, timeout, f"run {run_id} of {dag_id}", interval=2))
