"""A local stand-in for System A: the parts of vLLM's OpenAI-compatible server the platform talks to.

vLLM does not run on these machines (no CUDA, and its CPU build is compiled from source), so tests and the
demo point the real client (:class:`pipelines.publishing.serving.VLLMClient`) at this server instead. It
behaves like a vLLM started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``:

* ``GET /health`` → 200; ``GET /v1/models`` → the base (``parent`` null) and each loaded adapter with
  ``root`` = the path it was loaded from and ``parent`` = the base;
* ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"[, "load_inplace"]}``: a name already loaded is
  refused with 400 unless ``load_inplace`` is true and ``inplace=True`` (vLLM versions before in-place
  loading ignore the field and refuse: ``inplace=False``), as is the base's own name; then it reads the
  adapter folder (``adapter_config.json`` and ``adapter_model.*`` must be there, else 404);
* ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: 404 for a name not loaded;
* ``POST /v1/chat/completions`` and ``POST /v1/completions``: 404 for a model it does not serve; otherwise a
  deterministic reply that names the model and cites the first numbered source (``[1]``) in the last user
  message (or the prompt). With ``"stream": true`` the reply comes as Server-Sent Events, one word per
  chunk as vLLM sends them (``chat.completion.chunk`` / ``text_completion``), then ``data: [DONE]``;
* tool calling as vLLM serves it with ``--enable-auto-tool-choice``: a chat request with ``tools`` whose last
  message is the user's and holds directives ``call NAME {json arguments}`` for tools it was given is
  answered with those tool calls (``finish_reason: "tool_calls"``; streamed as ``tool_calls`` deltas, the
  name first and the arguments after); once the last message is a ``tool`` answer, the reply quotes the
  tool results it was given (``Stand-in answer from <model> after N tool result(s): ...``).

Connections are kept alive (HTTP/1.1, as uvicorn serves vLLM): plain answers carry a ``Content-Length``,
streams end by closing the connection; :meth:`VLLMStandIn.stop` closes the kept-alive connections too, so a
client's pooled connection does not outlive System A.

Errors use vLLM's JSON shape ``{"error": {"message", "type", "param", "code"}}`` and its messages (checked
against vLLM 0.33's ``entrypoints/openai/models/serving.py``). With ``token`` set every
route but ``/health`` wants ``Authorization: Bearer <token>`` (vLLM's ``--api-key``). ``requests`` records
(method, path, body) for tests.

Usage::

    with VLLMStandIn(base="smollm2") as srv:        # srv.url == "http://127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class VLLMStandIn:
    """A threaded HTTP server on 127.0.0.1 (``port`` 0: any free one) that behaves like vLLM's LoRA API."""

    def __init__(self, base: str = "base", port: int = 0, token: str = "", inplace: bool = True) -> None:
        self.base = base
        self.port = port
        self.token = token
        self.inplace = inplace
        self.adapters: dict[str, str] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """Where the server listens."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VLLMStandIn:
        """Listen (on the same port again after :meth:`stop`: System A coming back)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves vLLM
            timeout = 60  # an idle kept-alive connection is closed after this
            # headers and body are two writes: with Nagle on, a kept-alive connection waits for the client's
            # delayed ACK between them (40 ms a request)
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def log_message(self, *args: Any) -> None:
                pass

            def _event_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # the stream ends with the connection
                self.end_headers()
                self.close_connection = True

            def _send(self, status: int, body: Any) -> None:
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/json" if not isinstance(body, str) else "text/plain"
                )
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, message: str) -> None:
                kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}.get(
                    status, "Error"
                )
                self._send(
                    status, {"error": {"message": message, "type": kind, "param": None, "code": status}}
                )

            def _authorized(self) -> bool:
                if owner.token and self.headers.get("Authorization", "") != f"Bearer {owner.token}":
                    self._error(401, "Unauthorized")
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with owner._lock:
                    owner.requests.append(("GET", self.path, None))
                if self.path == "/health":
                    return self._send(200, "")
                if not self._authorized():
                    return None
                if self.path == "/v1/models":
                    with owner._lock:
                        data = [{"id": owner.base, "object": "model", "root": owner.base, "parent": None}]
                        data += [
                            {"id": n, "object": "model", "root": p, "parent": owner.base}
                            for n, p in sorted(owner.adapters.items())
                        ]
                    return self._send(200, {"object": "list", "data": data})
                return self._error(404, "Not Found")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._error(400, "invalid JSON body")
                with owner._lock:
                    owner.requests.append(("POST", self.path, body))
                if not self._authorized():
                    return None
                if self.path == "/v1/load_lora_adapter":
                    return self._load(body)
                if self.path == "/v1/unload_lora_adapter":
                    name = body.get("lora_name", "")
                    with owner._lock:
                        if name not in owner.adapters:
                            return self._error(404, f"The lora adapter '{name}' cannot be found.")
                        del owner.adapters[name]
                    return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.")
                if self.path in ("/v1/chat/completions", "/v1/completions"):
                    return self._chat(body, chat=self.path == "/v1/chat/completions")
                return self._error(404, "Not Found")

            def _load(self, body: dict[str, Any]) -> None:
                name, path = body.get("lora_name", ""), body.get("lora_path", "")
                if not name or not path:
                    return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.")
                if name == owner.base:
                    return self._error(400, f"The lora adapter '{name}' conflicts with a served base model.")
                with owner._lock:
                    if name in owner.adapters and not (owner.inplace and body.get("load_inplace")):
                        return self._error(
                            400,
                            f"The lora adapter '{name}' has already been loaded. If you want "
                            "to load the adapter in place, set 'load_inplace' to True.",
                        )
                folder = Path(path)
                if not (folder / "adapter_config.json").is_file() or not any(folder.glob("adapter_model.*")):
                    return self._error(404, f"Loading lora {name} failed: No adapter found for {path}")
                with owner._lock:
                    owner.adapters[name] = path
                return self._send(200, f"Success: LoRA adapter '{name}' added successfully.")

            def _chat(self, body: dict[str, Any], chat: bool = True) -> None:
                model = body.get("model", "")
                with owner._lock:
                    served = model == owner.base or model in owner.adapters
                if not served:
                    return self._error(404, f"The model `{model}` does not exist.")
                if chat:
                    messages = body.get("messages") or []
                    last = next(
                        (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
                    )
                else:
                    last = str(body.get("prompt") or "")
                calls = _tool_calls(body) if chat else []
                if calls:
                    return self._tool_calls(model, calls, bool(body.get("stream")))
                results = _tool_results(body) if chat else []
                cite = re.search(r"\[(\d+)\]", last)
                text = f"Stand-in answer from {model}" + (f" [{cite.group(1)}]." if cite else ".")
                if results:
                    text = f"Stand-in answer from {model} after {len(results)} tool result(s): " + " | ".join(
                        r[:400] for r in results
                    )
                usage = {"prompt_tokens": len(last.split()), "completion_tokens": len(text.split())}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                kind = "chat.completion" if chat else "text_completion"
                if body.get("stream"):
                    return self._stream(model, text, chat, usage)
                choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice["text"] = text
                return self._send(
                    200,
                    {
                        "id": "cmpl-standin",
                        "object": kind,
                        "created": 0,
                        "model": model,
                        "choices": [choice],
                        "usage": usage,
                    },
                )

            def _tool_calls(self, model: str, calls: list[dict[str, Any]], stream: bool) -> None:
                if not stream:
                    message = {"role": "assistant", "content": None, "tool_calls": calls}
                    choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
                    return self._send(200, {"id": "cmpl-standin", "object": "chat.completion", "created": 0,
                                            "model": model, "choices": [choice]})  # fmt: skip
                self._event_stream()
                deltas: list[tuple[dict[str, Any], str | None]] = []
                for i, call in enumerate(calls):
                    named = {"index": i, "id": call["id"], "type": "function",
                             "function": {"name": call["function"]["name"], "arguments": ""}}  # fmt: skip
                    deltas.append(
                        (
                            {"role": "assistant", "tool_calls": [named]}
                            if i == 0
                            else {"tool_calls": [named]},
                            None,
                        )
                    )
                    args = {"index": i, "function": {"arguments": call["function"]["arguments"]}}
                    deltas.append(({"tool_calls": [args]}, None))
                deltas.append(({}, "tool_calls"))
                for delta, finish in deltas:
                    chunk = {"id": "cmpl-standin", "object": "chat.completion.chunk", "created": 0, "model": model,
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                return None

            def _stream(self, model: str, text: str, chat: bool, usage: dict[str, int]) -> None:
                self._event_stream()
                words = text.split(" ")
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                kind = "chat.completion.chunk" if chat else "text_completion"
                for i, piece in enumerate(pieces):
                    last = i == len(pieces) - 1
                    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if last else None}
                    if chat:
                        choice["delta"] = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
                    else:
                        choice["text"] = piece
                    chunk = {"id": "cmpl-standin", "object": kind, "created": 0, "model": model,
                             "choices": [choice]}  # fmt: skip
                    if last:
                        chunk["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128  # a burst of concurrent clients (bench/gateway.py) is queued, not reset

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (System A down); loaded adapters are forgotten, as on a vLLM restart."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            open_connections, self._connections = list(self._connections), set()
        for conn in open_connections:  # kept-alive connections would otherwise go on answering
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.adapters.clear()

    def __enter__(self) -> VLLMStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tool_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls a request's last user message asks for (``call NAME {json}``), for tools it was given;
    none once tools have answered, or with ``tool_choice: "none"``."""
    messages = body.get("messages") or []
    if not body.get("tools") or body.get("tool_choice") == "none" or not messages:
        return []
    if messages[-1].get("role") != "user":
        return []
    offered = {t.get("function", {}).get("name") for t in body["tools"] if isinstance(t, dict)}
    text = str(messages[-1].get("content") or "")
    calls: list[dict[str, Any]] = []
    for m in re.finditer(r"call (\w+) ", text):
        try:
            args, _ = json.JSONDecoder().raw_decode(text, m.end())
        except ValueError:
            continue
        if m.group(1) in offered:
            call_id = f"call_{len(calls)}_{m.group(1)}"
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": m.group(1), "arguments": json.dumps(args)}})  # fmt: skip
    return calls


def _tool_results(body: dict[str, Any]) -> list[str]:
    """The tool answers after the last assistant turn, when the conversation ends with them."""
    out: list[str] = []
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "tool":
            break
        out.insert(0, str(m.get("content") or ""))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.vllm_standin [--port 8000] [--base smollm2]``: a stand-in System A to try the
    gateway or ``cbnano ask`` against, until interrupted. Prints its URL on the first line."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m pipelines.vllm_standin", description=main.__doc__)
    ap.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--base", default="smollm2", help="the base model's name, as vLLM would serve it")
    ap.add_argument("--token", default="", help="want this bearer token on every route but /health")
    args = ap.parse_args(argv)
    with VLLMStandIn(base=args.base, port=args.port, token=args.token) as srv:
        print(srv.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
