"""System A: vLLM's OpenAI-compatible server with runtime LoRA, told about every production move.

System A serves one base model and the four domain adapters under the domains' names (``chemistry``, ...).
Adapters are loaded from the model store's NFS export, which System A mounts read-only, possibly at another
path (``CBNANO_SYSTEM_A_STORE``; default: the same path as here). Whenever a domain's production moves (the
gate, ``models promote``, ``models rollback``), :func:`hand_off` makes System A serve the new production
adapter under the domain's name:

* it asks ``GET /v1/models`` what is loaded; an adapter already loaded from the right path is left alone, so
  a hand-off can be repeated at will;
* otherwise ``POST /v1/load_lora_adapter`` with ``load_inplace`` (vLLM replaces an adapter of that name in
  place); a server too old for that refuses a name it already has, and then the old adapter is unloaded
  (``/v1/unload_lora_adapter``) and the new one loaded (requests for that domain fail in between);
* it checks ``/v1/models`` again and records the outcome in ``<store>/<domain>/serving.json``: what System A
  last confirmed (version, path, when) and, after a failure, the error of the last attempt.

A hand-off never raises for System A's faults and never touches the store's production pointer: a publish
stands whether or not System A took it. A failure alerts (``pipelines.ops.alerts``), shows on the registry
page, and is retried by the ``serving_handoff`` DAG (which runs on every model Asset event, and by hand).

Usage::

    state = hand_off(settings, "catalysis")           # {"state": "confirmed", "version": ..., ...}
    print(" ".join(serve_command(settings)))          # the vLLM command line System A runs
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

from pipelines.lake import write_json
from pipelines.publishing.model_store import ModelStore
from pipelines.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "serving.json"
# vLLM accepts these --max-lora-rank values
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"


class SystemAError(RuntimeError):
    """System A did not answer, or refused; the message names the URL, the attempts and vLLM's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VLLMClient:
    """A small client of vLLM's OpenAI-compatible server.

    Limits: ``timeout_s`` per request; ``attempts`` tries for connection faults and 5xx with ``backoff_s``
    doubling between them; a 4xx is vLLM's considered answer and is not retried.
    """

    def __init__(
        self, url: str, token: str = "", timeout_s: float = 10.0, attempts: int = 3, backoff_s: float = 1.0
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s

    def __repr__(self) -> str:  # the token never shows (tracebacks, logs)
        return f"VLLMClient(url={self.url!r}, token={'***' if self.token else ''!r})"

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Any:
        url = f"{self.url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        error = ""
        for attempt in range(1, self.attempts + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                    raw = resp.read().decode("utf-8", errors="replace")
                try:
                    return json.loads(raw) if raw.strip() else {}
                except ValueError:
                    return raw  # vLLM answers the LoRA endpoints with plain text
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", errors="replace")[:500]
                if exc.code < 500:
                    raise SystemAError(
                        f"System A refused {method} {url}: HTTP {exc.code}: {vllm_reason(detail)}",
                        status=exc.code,
                    ) from None
                error = f"HTTP {exc.code}: {vllm_reason(detail)}"
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise SystemAError(
            f"System A at {self.url} did not answer {method} {path} after {self.attempts} attempt(s): {error}"
        )

    def adapters(self) -> dict[str, str]:
        """The LoRA adapters System A serves: name -> the path it loaded it from."""
        return model_list(self._call("GET", "/v1/models"), self.url).adapters

    def load(self, name: str, path: str, inplace: bool = False) -> None:
        """Load (or, with ``inplace``, replace) adapter ``name`` from ``path``."""
        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if inplace:
            body["load_inplace"] = True
        self._call("POST", "/v1/load_lora_adapter", body)

    def unload(self, name: str) -> None:
        """Unload adapter ``name``."""
        self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int = 512,
        temperature: float = 0.2,
        timeout_s: float = 120.0,
    ) -> str:
        """The assistant's reply from ``/v1/chat/completions`` (``model``: a domain's name or the base's)."""
        out = self._call(
            "POST",
            "/v1/chat/completions",
            {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature},
            timeout_s=timeout_s,
        )
        try:
            return str(out["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise SystemAError(
                f"System A at {self.url} answered chat/completions without a message: {str(out)[:200]}"
            ) from None


@dataclass(frozen=True)
class ModelListing:
    """What System A's ``GET /v1/models`` says it serves: the base and each LoRA adapter's load path."""

    base: str  # the model without a parent ("" when the list has none)
    adapters: dict[str, str]  # adapter name -> the path it was loaded from (vLLM's ``root``)


def model_list(answer: Any, url: str = "System A") -> ModelListing:
    """System A's model list out of its ``/v1/models`` answer (parsed JSON); :class:`SystemAError` when the
    answer is not one (an HTML page, a list without ids). The one parser: the hand-off and the gateway use it."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and "id" in m for m in data):
        raise SystemAError(
            f"System A at {url} answered /v1/models with something that is not a model list: "
            f"{str(answer)[:200]!r}"
        )
    base = next((str(m["id"]) for m in data if not m.get("parent")), "")
    return ModelListing(base, {str(m["id"]): str(m.get("root") or "") for m in data if m.get("parent")})


def vllm_reason(detail: str) -> str:
    """vLLM's error message out of its JSON error body (or the body itself)."""
    try:
        body = json.loads(detail)
    except ValueError:
        return detail.strip()
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(body.get("message") or body.get("detail") or err)
    return str(body)


def client_for(settings: Settings) -> VLLMClient:
    """A client of ``CBNANO_SYSTEM_A_URL`` with its token."""
    return VLLMClient(settings.system_a_url, settings.system_a_token)


@dataclass(frozen=True)
class ServedAdapter:
    """A domain's production adapter as System A must load it."""

    domain: str
    version: str
    path: str  # the adapter folder as System A sees it
    base: str  # the base's store name (adapter_config.json's base_model_name_or_path)
    rank: int


def system_a_path(settings: Settings, local: Path) -> str:
    """``local`` as System A sees it: under ``CBNANO_SYSTEM_A_STORE`` when it is in the model store, else the
    same path (a base kept outside the store must be mounted at the same path there)."""
    try:
        rel = local.resolve().relative_to(Path(settings.model_store).resolve())
    except ValueError:
        return str(local)
    return str(Path(settings.system_a_store or settings.model_store) / rel)


def served_adapter(settings: Settings, domain: str, store: ModelStore | None = None) -> ServedAdapter | None:
    """The domain's production adapter (the version's own folder, so the path changes with production)."""
    store = store or ModelStore(settings.model_store)
    version = store.production(domain)
    if version is None:
        return None
    folder = store.version_dir(domain, version) / "adapter"
    cfg = json.loads((folder / "adapter_config.json").read_text())
    return ServedAdapter(
        domain=domain,
        version=version,
        path=system_a_path(settings, folder),
        base=str(cfg.get("base_model_name_or_path", "")),
        rank=int(cfg.get("r", 0)),
    )


class HandOff(TypedDict, total=False):
    """A hand-off's outcome, kept as ``<domain>/serving.json`` (see :func:`hand_off`)."""

    domain: str
    state: str  # confirmed, failed, not_configured, no_production
    version: str
    path: str  # the adapter's path as System A sees it
    system_a: str  # its URL
    action: str  # already loaded, loaded, replaced, unloaded and loaded
    confirmed_at: str
    attempted_at: str
    error: str
    confirmed: HandOff  # a failed hand-off: the last confirmed one (empty if none)


def serving_state(settings: Settings, domain: str) -> HandOff:
    """What ``serving.json`` says about the domain on System A (empty before the first hand-off)."""
    path = Path(settings.model_store) / domain / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cast(HandOff, state) if isinstance(state, dict) else {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hand_off(
    settings: Settings, domain: str, client: VLLMClient | None = None, alert: bool = True
) -> HandOff:
    """Make System A serve ``domain``'s production adapter under the domain's name; returns the outcome.

    ``state`` is ``confirmed`` (System A lists the adapter from the production path), ``failed`` (with
    ``error``; alerted unless ``alert`` is false), ``not_configured`` (no ``CBNANO_SYSTEM_A_URL``) or
    ``no_production``. Never raises for System A's faults; never changes the model store's pointers.
    """
    if not settings.system_a_url and client is None:
        return {"domain": domain, "state": "not_configured"}
    store = ModelStore(settings.model_store)
    try:
        target = served_adapter(settings, domain, store)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # the adapter's config cannot be read
        version = store.production(domain) or ""
        folder = store.version_dir(domain, version) / "adapter" if version else Path()
        target = ServedAdapter(domain, version, system_a_path(settings, folder), "", 0)
        broken: Exception | None = SystemAError(f"cannot read {folder / 'adapter_config.json'}: {exc}")
    else:
        broken = None
    if target is None:
        return {"domain": domain, "state": "no_production"}
    client = client or client_for(settings)
    previous = serving_state(settings, domain)
    outcome: HandOff = {
        "domain": domain,
        "version": target.version,
        "path": target.path,
        "system_a": client.url,
    }
    try:
        if broken is not None:
            raise broken
        loaded = client.adapters()
        action = "already loaded"
        if loaded.get(domain) != target.path:
            action = "loaded"
            try:
                client.load(domain, target.path, inplace=domain in loaded)
                action = "replaced" if domain in loaded else "loaded"
            except SystemAError as exc:
                if domain not in loaded or exc.status not in (400, 409):
                    raise
                client.unload(domain)  # a vLLM without in-place loading: unload, then load
                client.load(domain, target.path)
                action = "unloaded and loaded"
            now = client.adapters().get(domain)
            if now != target.path:
                raise SystemAError(
                    f"System A at {client.url} lists {domain} from {now!r} after loading {target.path}"
                )
        outcome.update({"state": "confirmed", "action": action, "confirmed_at": _now()})
        log.info("System A serves %s %s (%s)", domain, target.version, action)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, production already moved: record and alert
        if not isinstance(exc, SystemAError):
            exc = SystemAError(f"{type(exc).__name__}: {exc}")
        outcome.update(
            {
                "state": "failed",
                "error": str(exc),
                "attempted_at": _now(),
                "confirmed": previous.get("confirmed")
                or (previous if previous.get("state") == "confirmed" else {}),
            }
        )
        log.warning("hand-off of %s %s to System A failed: %s", domain, target.version, exc)
        if alert:
            from pipelines.ops.alerts import send_alert

            send_alert(
                settings,
                f"System A did not take {domain} {target.version}",
                f"{exc}\nThe model store's production is {target.version}; retry with the serving_handoff "
                "DAG (or `cbnano models handoff`).",
                {"domain": domain, "version": target.version},
            )
    write_json(Path(settings.model_store) / domain / STATE_FILE, outcome)
    return outcome


def tool_call_parser(base: str) -> str:
    """vLLM's ``--tool-call-parser`` for a base model: how its chat template writes a tool call. Llama 3.x
    writes JSON (``llama3_json``), Mistral its own ``[TOOL_CALLS]``; SmolLM2 and Qwen-style templates write
    ``<tool_call>{json}</tool_call>`` (``hermes``), the default."""
    name = Path(base).name.lower()
    if "llama" in name:
        return "llama3_json"
    if "mistral" in name:
        return "mistral"
    return "hermes"


def serve_command(settings: Settings, domains: list[str] | None = None, min_rank: int = 0) -> list[str]:
    """The vLLM command line System A runs: the base, LoRA on, every domain's production adapter.

    Raises ValueError when production adapters disagree on their base (one server serves one base) or when
    no base is known.
    """
    from pipelines.settings import DOMAINS

    store = ModelStore(settings.model_store)
    adapters = [a for d in (domains or list(DOMAINS)) if (a := served_adapter(settings, d, store))]
    bases = {a.base for a in adapters}
    if len(bases) > 1:
        detail = ", ".join(f"{a.domain}: {a.base}" for a in adapters)
        raise ValueError(
            f"production adapters are trained on different bases ({detail}); one vLLM server "
            "serves one base: promote versions of one base"
        )
    imported = store.imported_bases()
    only = imported[0] if len(imported) == 1 else ""  # after `make demo`: the one base there is
    base = next(iter(bases)) if bases else settings.base_model or only
    if not base:
        raise ValueError(
            "no production adapter and no CBNANO_BASE_MODEL: nothing tells which base to serve"
            + (f" (imported: {', '.join(imported)})" if imported else "")
        )
    base_path = base if "/" in base else system_a_path(settings, store.base_dir(base))
    # ``min_rank``: what the next month's adapters will need (the caller reads it from the training profile)
    rank = max([a.rank for a in adapters] + [min_rank])
    rank = next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])
    cmd = [
        "vllm",
        "serve",
        base_path,
        "--served-model-name",
        Path(base).name,
        "--enable-lora",
        "--max-lora-rank",
        str(rank),
        "--max-loras",
        str(max(len(DOMAINS), len(adapters))),
        # OpenAI tool calling (the gateway passes `tools` through and runs its own for `+tools` models)
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        tool_call_parser(base),
    ]
    if adapters:
        cmd += ["--lora-modules", *[f"{a.domain}={a.path}" for a in adapters]]
    return cmd
