"""The platform's configuration, read once from ``CBNANO_*`` environment variables.

Every part of the platform (CLI, DAG tasks, benchmarks) asks :func:`get_settings` for its configuration.
Defaults are embedded so that a fresh checkout runs on one machine with no set-up: everything lives under
``CBNANO_HOME`` (``./var``), the vector store is a Milvus Lite file there, and the HTTP endpoints are the
real public ones. In the lab the same variables point at the hosts (see README's configuration table).

Secrets (the tokens, the SMTP password, the alert webhook URL, which carries its token in its path) come from
the environment only, never from code or files in the repo; they are marked as such on :class:`Settings`, whose
``repr``, ``str`` and :meth:`Settings.as_dict` never show them. Every variable is checked once, here, when
the settings are loaded: a bad value is one :class:`SettingsError` line naming the variable.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ARXIV_API_URL = "https://export.arxiv.org/api/query"
ARXIV_RSS_URL = "https://rss.arxiv.org/rss"
PUBCHEM_URL = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Hardware profiles in axolotl_configs/. `tiny` trains a random test model: it exercises the chain in tests and
# demos, and its candidates never become production unless CBNANO_ALLOW_TEST_MODELS=1.
TRAIN_PROFILES = ("tiny", "cpu_lora", "gpu_qlora")
# The lab's domains: one dataset, adapter, eval set and model Asset each (include/domains.yaml routes documents
# to them; tests/unit/training/test_configs.py checks that every copy agrees with this one).
DOMAINS = ("chemistry", "materials", "thermal", "catalysis")
TEST_PROFILES = ("tiny",)
DEFAULT_TRAIN_PROFILE = "gpu_qlora"  # System B's recipe; what the monthly schedule runs
# One home per default: the clients, the indexer and the store take theirs from here.
ARXIV_DELAY_S = 3.0  # arXiv's terms: one request every 3 s
HTTP_MAX_ATTEMPTS = 5
HTTP_BACKOFF_S = 2.0  # first retry after 1-2 s, doubling
HTTP_TIMEOUT_S = 60.0
HTTP_MAX_BYTES = 64 * 1024 * 1024  # the largest answer read (an arXiv page of 2,000 entries is ~5 MB)
MAX_ABSTRACT_CHARS = 20_000  # longer abstracts are cut (arXiv's own limit is 1,920 characters)
MILVUS_LOCK_WAIT_S = 120.0  # how long to wait to reach (or start) a Milvus Lite file's shared server
MILVUS_LITE_IDLE_S = 30.0  # a Milvus Lite file's shared server stops after this long without a client
MAX_CHUNKS_PER_DOC = 64  # about 13,000 word pieces: far beyond an abstract or a compound record
EMBEDDING_BATCH_SIZE = 64
REPLAY_SHARE = 0.2  # earlier months' training rows mixed into a month's dataset, as a share of it
# the base's own general text in a month's dataset: off (seed 1 forgot more with it, BENCHMARKS)
REHEARSAL_SHARE = 0.0
STATSD_PORT = 8125


class SettingsError(ValueError):
    """A ``CBNANO_*`` variable holds a value the platform cannot use."""


_SECRET = {"secret": True}


def secret_fields() -> tuple[str, ...]:
    """The names of the :class:`Settings` fields that hold secrets."""
    return tuple(f.name for f in fields(Settings) if f.metadata.get("secret"))


def redact_url(url: str) -> str:
    """``url`` without what may carry a secret (its path, query and credentials): ``https://host/…``.

    Webhook URLs (Slack, Teams, Mattermost) carry their token in the path.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{port}/…" if host else "<URL without host>"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Paths are absolute."""

    home: Path
    data_dir: Path
    model_store: Path
    runs_dir: Path
    milvus_uri: str
    milvus_token: str = field(repr=False, metadata=_SECRET)
    milvus_collection: str
    arxiv_api_url: str
    arxiv_rss_url: str
    arxiv_delay_s: float
    http_max_attempts: int
    http_backoff_s: float
    http_timeout_s: float
    pubchem_url: str
    embedding_model: str
    embedding_device: str
    embedding_batch_size: int
    train_python: str
    gpus: int
    base_model: str = ""  # the lab's base: a name under <model store>/base/, or a model folder
    train_profile: str = DEFAULT_TRAIN_PROFILE
    allow_test_models: bool = False
    http_max_bytes: int = HTTP_MAX_BYTES
    max_abstract_chars: int = MAX_ABSTRACT_CHARS
    milvus_lock_wait_s: float = MILVUS_LOCK_WAIT_S
    milvus_lite_idle_s: float = MILVUS_LITE_IDLE_S
    max_chunks_per_doc: int = MAX_CHUNKS_PER_DOC  # chunks one document may take (its beginning is kept)
    search_token: str = field(
        default="", repr=False, metadata=_SECRET
    )  # bearer token of the search service (System C); empty: no auth
    system_a_url: str = ""  # vLLM's OpenAI-compatible server on System A; empty: no hand-off, local answers
    system_a_token: str = field(default="", repr=False, metadata=_SECRET)
    system_a_store: str = ""  # the model store's mount point on System A; empty: the same path as here
    teacher_url: str = (
        ""  # an OpenAI-compatible chat endpoint that writes fact QA; empty: rule-based extractor
    )
    teacher_model: str = ""
    teacher_token: str = field(default="", repr=False, metadata=_SECRET)
    replay_share: float = REPLAY_SHARE
    rehearsal_share: float = REHEARSAL_SHARE
    alert_webhook_url: str = field(default="", repr=False, metadata=_SECRET)  # carries its token in its path
    alert_email: str = ""
    smtp_host: str = ""
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False, metadata=_SECRET)
    gateway_db: str = field(default="", repr=False, metadata=_SECRET)  # SQLAlchemy URL (may hold a password)
    require_approval: bool = False  # a candidate the gate passes waits for a person before production moves
    gateway_rpm: int = 120  # requests per minute per user (a user's own in `cbnano gateway keys limit`)
    gateway_tokens_per_day: int = 2_000_000  # tokens in and out per user and UTC day
    gateway_max_inflight: int = 16  # requests at System A at once; the rest queue by priority
    gateway_cache: str = field(default="memory", repr=False, metadata=_SECRET)  # memory | off | redis://…
    gateway_cache_ttl_s: float = 3600.0
    feedback_rows: bool = False  # the gateway's positively rated +rag answers become rows of the next dataset
    statsd_on: bool = False
    statsd_host: str = "127.0.0.1"
    statsd_port: int = STATSD_PORT
    statsd_prefix: str = "cbnano"

    @property
    def milvus_is_lite(self) -> bool:
        """True when the Milvus URI is a local Milvus Lite file rather than a server."""
        return not self.milvus_uri.startswith(("http://", "https://", "tcp://", "unix:"))

    def as_dict(self) -> dict[str, str]:
        """Every setting as a printable string, secrets masked (the webhook URL down to its host)."""
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        for name in secret_fields():
            out[name] = "***" if getattr(self, name) else ""
        if self.alert_webhook_url:
            out["alert_webhook_url"] = redact_url(self.alert_webhook_url)
        return out

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    __str__ = __repr__


def _number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {what}") from None


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    above: bool = False,
    below: float | None = None,
) -> float:
    """A number >= ``minimum`` (> with ``above``) and < ``below``; NaN and infinity are refused."""
    value = float(_number(env, name, float, default))
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={env.get(name)!r} is not a finite number")
    if value < minimum or (above and value == minimum):
        raise SettingsError(f"{name}={env.get(name)!r} must be {'>' if above else '>='} {minimum:g}")
    if below is not None and value >= below:
        raise SettingsError(f"{name}={env.get(name)!r} must be < {below:g}")
    return value


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None
) -> int:
    value = int(_number(env, name, int, default))
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise SettingsError(f"{name}={env.get(name)!r} must be {bound}")
    return value


def _url(env: Mapping[str, str], name: str, default: str = "", secret: bool = False) -> str:
    """An http(s) URL with a host (or empty, when the default is empty); a secret one is never echoed."""
    raw = (env.get(name) or "").strip() or default
    if not raw:
        return ""
    shown = "" if secret else f"={raw!r}"
    try:
        parts = urlsplit(raw)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(f"{name}{shown} is not an http(s) URL with a host (e.g. https://host:8000)")
    return raw


def _host_port(env: Mapping[str, str], name: str) -> str:
    """``host`` or ``host:port`` (port 1-65535), or empty."""
    raw = (env.get(name) or "").strip()
    if ":" not in raw:
        return raw
    host, _, port = raw.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(f"{name}={raw!r}: the port after ':' must be a number between 1 and 65535")
    if not host:
        raise SettingsError(f"{name}={raw!r} has a port but no host")
    return raw


def _cache_spec(env: Mapping[str, str], name: str) -> str:
    """``memory`` (default), ``off``, or a Redis URL (``redis://``, ``rediss://``, ``unix://``; never echoed)."""
    raw = (env.get(name) or "memory").strip()
    if raw in ("memory", "off") or raw.startswith(("redis://", "rediss://", "unix://")):
        return raw
    raise SettingsError(f"{name} must be memory, off or a redis:// URL")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return (env.get(name) or "false").strip().lower() in ("1", "true", "yes", "on")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default: ``os.environ``); returns a new object each call."""
    env = os.environ if env is None else env
    home = Path(env.get("CBNANO_HOME") or "./var").expanduser().resolve()
    data_dir = Path(env.get("CBNANO_DATA_DIR") or home / "data").expanduser().resolve()
    model_store = Path(env.get("CBNANO_MODEL_STORE") or home / "models").expanduser().resolve()
    # training run folders (rendered config, checkpoints, adapter, merged model): NFS /exports/checkpoints
    runs_dir = Path(env.get("CBNANO_RUNS_DIR") or home / "runs").expanduser().resolve()
    milvus_uri = env.get("CBNANO_MILVUS_URI") or str(home / "milvus.db")
    # absolute(), not resolve(): a venv's bin/python is a symlink to the base interpreter, and following it
    # would leave the venv (and its packages) behind
    train_python = env.get("CBNANO_TRAIN_PYTHON") or str(PROJECT_ROOT / ".venv-train" / "bin" / "python")
    train_profile = (env.get("CBNANO_TRAIN_PROFILE") or DEFAULT_TRAIN_PROFILE).strip()
    if train_profile not in TRAIN_PROFILES:
        raise SettingsError(
            f"CBNANO_TRAIN_PROFILE={train_profile!r} is not a profile; known: {', '.join(TRAIN_PROFILES)}"
        )
    return Settings(
        home=home,
        data_dir=data_dir,
        model_store=model_store,
        runs_dir=runs_dir,
        milvus_uri=milvus_uri,
        milvus_token=env.get("CBNANO_MILVUS_TOKEN", ""),
        milvus_collection=env.get("CBNANO_MILVUS_COLLECTION") or "cbnano_corpus",
        arxiv_api_url=_url(env, "CBNANO_ARXIV_API_URL", ARXIV_API_URL),
        arxiv_rss_url=_url(env, "CBNANO_ARXIV_RSS_URL", ARXIV_RSS_URL),
        arxiv_delay_s=_float(env, "CBNANO_ARXIV_DELAY_S", ARXIV_DELAY_S),
        http_max_attempts=_int(env, "CBNANO_HTTP_MAX_ATTEMPTS", HTTP_MAX_ATTEMPTS),
        http_backoff_s=_float(env, "CBNANO_HTTP_BACKOFF_S", HTTP_BACKOFF_S),
        http_timeout_s=_float(env, "CBNANO_HTTP_TIMEOUT_S", HTTP_TIMEOUT_S, above=True),
        pubchem_url=_url(env, "CBNANO_PUBCHEM_URL", PUBCHEM_URL),
        embedding_model=env.get("CBNANO_EMBEDDING_MODEL") or EMBEDDING_MODEL,
        embedding_device=env.get("CBNANO_EMBEDDING_DEVICE") or "cpu",
        embedding_batch_size=_int(env, "CBNANO_EMBEDDING_BATCH_SIZE", EMBEDDING_BATCH_SIZE),
        train_python=train_python,
        gpus=_int(env, "CBNANO_GPUS", 0, minimum=0),
        base_model=(env.get("CBNANO_BASE_MODEL") or "").strip(),
        train_profile=train_profile,
        allow_test_models=_flag(env, "CBNANO_ALLOW_TEST_MODELS"),
        http_max_bytes=_int(env, "CBNANO_HTTP_MAX_BYTES", HTTP_MAX_BYTES),
        max_abstract_chars=_int(env, "CBNANO_MAX_ABSTRACT_CHARS", MAX_ABSTRACT_CHARS),
        milvus_lock_wait_s=_float(env, "CBNANO_MILVUS_LOCK_WAIT_S", MILVUS_LOCK_WAIT_S),
        milvus_lite_idle_s=_float(env, "CBNANO_MILVUS_LITE_IDLE_S", MILVUS_LITE_IDLE_S, above=True),
        max_chunks_per_doc=_int(env, "CBNANO_MAX_CHUNKS_PER_DOC", MAX_CHUNKS_PER_DOC),
        search_token=env.get("CBNANO_SEARCH_TOKEN", ""),
        system_a_url=_url(env, "CBNANO_SYSTEM_A_URL"),
        system_a_token=env.get("CBNANO_SYSTEM_A_TOKEN", ""),
        system_a_store=(env.get("CBNANO_SYSTEM_A_STORE") or "").strip(),
        teacher_url=_url(env, "CBNANO_TEACHER_URL").rstrip("/"),
        teacher_model=(env.get("CBNANO_TEACHER_MODEL") or "").strip(),
        teacher_token=env.get("CBNANO_TEACHER_TOKEN", ""),
        replay_share=_float(env, "CBNANO_REPLAY_SHARE", REPLAY_SHARE, below=1.0),
        rehearsal_share=_float(env, "CBNANO_REHEARSAL_SHARE", REHEARSAL_SHARE, below=1.0),
        alert_webhook_url=_url(env, "CBNANO_ALERT_WEBHOOK_URL", secret=True),
        alert_email=env.get("CBNANO_ALERT_EMAIL", ""),
        smtp_host=_host_port(env, "CBNANO_SMTP_HOST"),
        smtp_user=env.get("CBNANO_SMTP_USER", ""),
        smtp_password=env.get("CBNANO_SMTP_PASSWORD", ""),
        gateway_db=(env.get("CBNANO_GATEWAY_DB") or "").strip(),
        feedback_rows=_flag(env, "CBNANO_FEEDBACK_ROWS"),
        require_approval=_flag(env, "CBNANO_REQUIRE_APPROVAL"),
        gateway_rpm=_int(env, "CBNANO_GATEWAY_RPM", 120),
        gateway_tokens_per_day=_int(env, "CBNANO_GATEWAY_TOKENS_PER_DAY", 2_000_000),
        gateway_max_inflight=_int(env, "CBNANO_GATEWAY_MAX_INFLIGHT", 16, maximum=4096),
        gateway_cache=_cache_spec(env, "CBNANO_GATEWAY_CACHE"),
        gateway_cache_ttl_s=_float(env, "CBNANO_GATEWAY_CACHE_TTL_S", 3600.0, minimum=1.0),
        statsd_on=_flag(env, "CBNANO_STATSD_ON"),
        statsd_host=env.get("CBNANO_STATSD_HOST") or "127.0.0.1",
        statsd_port=_int(env, "CBNANO_STATSD_PORT", STATSD_PORT, maximum=65535),
        statsd_prefix=env.get("CBNANO_STATSD_PREFIX") or "cbnano",
    )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use and cached."""
    return load_settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the CLI call this after changing the environment)."""
    get_settings.cache_clear()
