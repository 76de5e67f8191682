"""A local stand-in for arXiv's export API and RSS feed, replaying files in the real formats.

Tests, the demo and the benchmarks point the real :class:`~pipelines.sources.arxiv.ArxivClient` at this
server (``CBNANO_ARXIV_API_URL`` / ``CBNANO_ARXIV_RSS_URL``), since arXiv itself is unreachable here.

* ``/api/query`` answers from a corpus of Atom files: it reads the ``cat:`` terms and the
  ``submittedDate:[A TO B]`` range of ``search_query``, selects the entries (verbatim XML) whose first
  submission falls in the range, sorts them by date, pages them with ``start``/``max_results`` and wraps
  them in a 2026-format feed with opensearch totals. ``short_page`` caps every page, as arXiv sometimes does.
* ``/rss/<category>`` serves ``<rss_dir>/<category>.xml``.
* ``/rest/pug/...`` answers PubChem PUG REST from a folder of per-compound files in PubChem's formats
  (``cid_<n>.property.json`` PropertyTable, ``cid_<n>.description.json`` InformationList) and a
  ``names.json`` routing table (name -> CIDs): name -> CID lookups, batched property and description POSTs,
  404 ``PUGREST.NotFound`` faults, and an ``X-Throttling-Control`` header (Green unless a rule says otherwise).
* Scripted :class:`Rule` answers (an HTTP 503, a 429 with ``Retry-After``, an error feed, an empty page, a
  blank body) are served first, each a set number of times, to exercise the client's retry policy.

Every request is recorded in ``requests`` (method, path, query) so that tests can assert on what was asked.

Usage::

    with ReplayServer(corpus=[Path("include/samples/arxiv")]) as srv:
        os.environ["CBNANO_ARXIV_API_URL"] = srv.arxiv_api_url
"""

from __future__ import annotations

import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ATOM = "http://www.w3.org/2005/Atom"
NS = {"atom": ATOM, "arxiv": "http://arxiv.org/schemas/atom"}
ET.register_namespace("", ATOM)
ET.register_namespace("arxiv", "http://arxiv.org/schemas/atom")
ET.register_namespace("opensearch", "http://a9.com/-/spec/opensearch/1.1/")

_CAT_RE = re.compile(r"cat:([A-Za-z][\w.\-]*)")
_DATE_RE = re.compile(r"submittedDate:\[(\d{12}) TO (\d{12})\]")

_RSS_CATEGORY = re.compile(r"^[a-z][a-z\-]*(\.[A-Za-z][A-Za-z\-]*)?\Z")


@dataclass
class Rule:
    """A scripted answer for requests whose path starts with ``path``, served ``times`` times.

    ``mode`` is ``static`` (``status``, ``headers``, ``body`` as given), ``empty_page`` (the page the
    corpus would give, with its entries removed but its totals kept) or ``add_headers`` (the normal answer
    with ``headers`` added, e.g. a Yellow ``X-Throttling-Control``).
    """

    path: str
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    mode: str = "static"


@dataclass(frozen=True)
class _Entry:
    arxiv_id: str
    published: datetime | None
    categories: frozenset[str]
    xml: str


def load_corpus(paths: list[Path]) -> dict[str, _Entry]:
    """Entries of every ``*.xml`` Atom file under ``paths`` by arXiv id; later files override earlier ones."""
    entries: dict[str, _Entry] = {}
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(Path(p).glob("*.xml")) if Path(p).is_dir() else [Path(p)])
    for f in files:
        root = ET.parse(f).getroot()
        for el in root.findall("atom:entry", NS):
            raw_id = (el.findtext("atom:id", "", NS) or "").strip()
            key = re.sub(r"v\d+$", "", raw_id.rsplit("/abs/", 1)[-1]) or f"{f.name}#{len(entries)}"
            pub = el.findtext("atom:published", None, NS)
            published = datetime.fromisoformat(pub.strip().replace("Z", "+00:00")) if pub else None
            cats = frozenset(c.get("term", "") for c in el.findall("atom:category", NS))
            prim = el.find("arxiv:primary_category", NS)
            if prim is not None:
                cats = cats | {prim.get("term", "")}
            entries[key] = _Entry(key, published, cats, ET.tostring(el, encoding="unicode"))
    return entries


def render_feed(entries: list[str], total: int, start: int, query: str) -> bytes:
    """A 2026-format API feed around already-serialised ``<entry>`` elements."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    esc = query.replace("&", "&amp;").replace("<", "&lt;")
    head = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">\n'
        f"  <id>https://arxiv.org/api/replay</id>\n  <title>arXiv Query: search_query={esc}</title>\n"
        f"  <updated>{now}</updated>\n"
        f"  <opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>\n"
        f"  <opensearch:totalResults>{total}</opensearch:totalResults>\n"
        f"  <opensearch:startIndex>{start}</opensearch:startIndex>\n"
    )
    return (head + "".join(f"  {e}\n" for e in entries) + "</feed>\n").encode()


class ReplayServer:
    """The replay server (see module docstring); start with ``with`` or :meth:`start`."""

    def __init__(
        self,
        corpus: list[Path] | None = None,
        rss_dir: Path | None = None,
        rules: list[Rule] | None = None,
        short_page: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        pubchem_dir: Path | None = None,
    ) -> None:
        self.corpus = load_corpus(corpus or [])
        self.rss_dir = rss_dir
        self.pubchem_dir = pubchem_dir
        self.pubchem_names: dict[str, list[int]] = (
            json.loads((pubchem_dir / "names.json").read_text()) if pubchem_dir else {}
        )
        self.arrivals: list[float] = []  # time.monotonic() of each request's arrival
        self.rules = list(rules or [])
        self.short_page = short_page
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def arxiv_api_url(self) -> str:
        """The value for ``CBNANO_ARXIV_API_URL``."""
        return f"{self.base_url}/api/query"

    @property
    def pubchem_url(self) -> str:
        """The value for ``CBNANO_PUBCHEM_URL``."""
        return f"{self.base_url}/rest/pug"

    @property
    def arxiv_rss_url(self) -> str:
        """The value for ``CBNANO_ARXIV_RSS_URL``."""
        return f"{self.base_url}/rss"

    def set_corpus(self, paths: list[Path]) -> None:
        """Replace the corpus (e.g. to serve a revised version of a paper)."""
        corpus = load_corpus(paths)
        with self._lock:
            self.corpus = corpus

    def add_rule(self, rule: Rule) -> None:
        """Queue a scripted answer."""
        with self._lock:
            self.rules.append(rule)

    def start(self) -> ReplayServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering -------------------------------------------------------------------------------------
    def _take_rule(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and path.startswith(rule.path):
                    rule.times -= 1
                    return rule
        return None

    def _api_page(self, params: dict[str, list[str]]) -> bytes:
        query = params.get("search_query", [""])[0]
        start = int(params.get("start", ["0"])[0])
        size = int(params.get("max_results", ["10"])[0])
        if self.short_page:
            size = min(size, self.short_page)
        cats = set(_CAT_RE.findall(query))
        window = _DATE_RE.search(query)
        lo = hi = None
        if window:
            lo = datetime.strptime(window.group(1), "%Y%m%d%H%M").replace(tzinfo=UTC)
            hi = datetime.strptime(window.group(2), "%Y%m%d%H%M").replace(tzinfo=UTC)
        with self._lock:
            corpus = list(self.corpus.values())
        selected = []
        for e in corpus:
            if cats and not (cats & e.categories):
                continue
            # submittedDate is inclusive at minute resolution
            if lo and hi and e.published and not (lo <= e.published.replace(second=0) <= hi):
                continue
            selected.append(e)
        selected.sort(key=lambda e: (e.published or datetime.min.replace(tzinfo=UTC), e.arxiv_id))
        return render_feed([e.xml for e in selected[start : start + size]], len(selected), start, query)

    def _pubchem(self, path: str, form: dict[str, list[str]]) -> tuple[int, bytes]:
        def fault(message: str) -> tuple[int, bytes]:
            body = {"Fault": {"Code": "PUGREST.NotFound", "Message": message, "Details": [message]}}
            return 404, json.dumps(body, indent=2).encode()

        def cid_list() -> list[int]:
            raw = ",".join(form.get("cid", [])) or path.split("/compound/cid/", 1)[-1].split("/", 1)[0]
            return [int(c) for c in raw.split(",") if c.strip().isdigit()]

        def load(cid: int, kind: str) -> Any:
            f = self.pubchem_dir / f"cid_{cid}.{kind}.json" if self.pubchem_dir else None
            return json.loads(f.read_text()) if f and f.is_file() else None

        if "/compound/name/" in path:
            name = form.get("name", [""])[0] or unquote(path.split("/compound/name/", 1)[1].split("/", 1)[0])
            cids = self.pubchem_names.get(name.strip().lower())
            if not cids:
                return fault("No CID found")
            return 200, json.dumps({"IdentifierList": {"CID": cids}}, indent=2).encode()
        if "/property/" in path:
            wanted = path.split("/property/", 1)[1].split("/", 1)[0].split(",")
            rows = []
            for cid in cid_list():
                doc = load(cid, "property")
                if doc:
                    for row in doc["PropertyTable"]["Properties"]:
                        legacy = {"CanonicalSMILES": "ConnectivitySMILES", "IsomericSMILES": "SMILES"}
                        rows.append(
                            {
                                k: v
                                for k, v in row.items()
                                if k == "CID" or k in wanted or legacy.get(k) in wanted
                            }
                        )
            if not rows:
                return fault("No records found")
            return 200, json.dumps({"PropertyTable": {"Properties": rows}}, indent=2).encode()
        if path.endswith("/description/JSON"):
            info = []
            for cid in cid_list():
                doc = load(cid, "description")
                if doc:
                    info.extend(doc["InformationList"]["Information"])
            if not info:
                return fault("No records found")
            return 200, json.dumps({"InformationList": {"Information": info}}, indent=2).encode()
        return 400, b'{"Fault": {"Code": "PUGREST.BadRequest", "Message": "unsupported in replay"}}'

    def _answer(self, method: str, raw_path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        params = parse_qs(parts.query)
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.requests.append((method, parts.path, params))
        rule = self._take_rule(parts.path)
        xml = {"Content-Type": "application/atom+xml; charset=UTF-8"}
        if rule is not None and rule.mode == "static":
            return rule.status, rule.headers, rule.body
        if parts.path.startswith("/rest/pug/") and self.pubchem_dir is not None:
            status, answer = self._pubchem(parts.path, parse_qs(body.decode()) if body else params)
            headers = {
                "Content-Type": "application/json",
                "X-Throttling-Control": "Request Count status: Green (0%), Request Time status: Green "
                "(0%), Service status: Green (10%)",
            }
            if rule is not None and rule.mode == "add_headers":
                headers.update(rule.headers)
            return status, headers, answer
        if parts.path == "/api/query":
            body = self._api_page(params)
            if rule is not None and rule.mode == "empty_page":
                body = re.sub(rb"\s*<entry[ >].*?</entry>", b"", body, flags=re.S)
            return 200, xml, body
        category = parts.path.removeprefix("/rss/")
        # only an arXiv category name: a path such as ../../x must not reach files outside rss_dir
        if parts.path.startswith("/rss/") and self.rss_dir is not None and _RSS_CATEGORY.match(category):
            f = self.rss_dir / f"{category}.xml"
            if f.is_file():
                return 200, {"Content-Type": "application/rss+xml"}, f.read_bytes()
        return 404, {"Content-Type": "text/plain"}, b"not found\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, method: str, body: bytes = b"") -> None:
                status, headers, body = server._answer(method, self.path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._reply("GET")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                self._reply("POST", self.rfile.read(length))

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        return Handler
