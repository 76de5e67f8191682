"""PubChem PUG REST: compound properties, name → CID, and descriptions, within PubChem's usage policy.

Policy (https://pubchem.ncbi.nlm.nih.gov/docs/programmatic-access, "Request Volume Limitations"): no more than
5 requests per second and 400 per minute per user, and watch the ``X-Throttling-Control`` header
(https://pubchem.ncbi.nlm.nih.gov/docs/dynamic-request-throttling). This client enforces both rates with
:class:`WindowLimiter` shared by every client in the process (:data:`POLICY_LIMITER`), slows down when
the header says Yellow or Red, and stops with :class:`PubChemThrottled` when it says Black. HTTP 503
(ServerBusy, sometimes with an HTML body) and 504 are retried with backoff.

A 404 ``PUGREST.NotFound`` fault is an answer ("no such compound"), not an error: name lookups return an
empty list and record it. Batching keeps requests per compound low: properties and descriptions are asked for
``batch_size`` CIDs per POST.

Usage::

    client = PubChemClient.from_settings(get_settings())
    cids = client.cids_for_name("lithium iron phosphate")
    props = client.properties([2244, 5564]); descs = client.descriptions([2244])
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict, cast

import requests

from pipelines.contracts import CompoundFields
from pipelines.settings import HTTP_TIMEOUT_S, Settings
from pipelines.sources.http import MAX_RESPONSE_BYTES, PoliteClient, RetryPolicy, SourceError

log = logging.getLogger(__name__)

REQUESTS_PER_SECOND = 5  # PubChem usage policy
REQUESTS_PER_MINUTE = 400  # PubChem usage policy
PROPERTIES = (
    "Title",
    "MolecularFormula",
    "MolecularWeight",
    "IUPACName",
    "ConnectivitySMILES",
    "SMILES",
    "InChIKey",
    "XLogP",
)
LEGACY_SMILES = {
    "CanonicalSMILES": "ConnectivitySMILES",
    "IsomericSMILES": "SMILES",
}  # before the 2025 rename
_STATUS_RANK = {"green": 0, "yellow": 1, "red": 2, "black": 3}
_THROTTLE_RE = re.compile(r"(Request Count|Request Time|Service) status:\s*(\w+)", re.I)


class PubChemThrottled(SourceError):
    """PubChem says Black: the request limit is exceeded and requests are being blocked. Stop, retry later."""


@dataclass
class WindowLimiter:
    """At most ``n`` request starts in any ``per`` seconds, for every (n, per) in ``rates``, process-wide.

    A token bucket sized to the limit (5 tokens refilled at 5/s) would let 9 requests through within one
    second (a full bucket, then 4 refills), which breaks "at most 5 per second"; this limiter instead keeps
    the start times of the last ``n`` requests per window and waits until the oldest is ``per`` seconds old,
    so bursts of up to ``n`` are allowed and no window ever holds more. ``margin`` stretches each window a
    little to absorb network jitter between our clock and the server's. ``slowdown`` (>= 1) stretches it
    further; the PubChem client raises it on Yellow/Red throttling answers. Thread-safe; one instance is
    shared by every client of the process (:data:`POLICY_LIMITER`).
    """

    rates: Sequence[tuple[int, float]]
    margin: float = 0.05
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    slowdown: float = 1.0
    _starts: dict[int, deque[float]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def acquire(self) -> None:
        with self._lock:
            while True:
                now = self.clock()
                wait = 0.0
                for i, (n, per) in enumerate(self.rates):
                    log_ = self._starts.setdefault(i, deque(maxlen=n))
                    if len(log_) == n:
                        wait = max(wait, log_[0] + per * (1 + self.margin) * self.slowdown - now)
                if wait <= 0:
                    for i in range(len(self.rates)):
                        self._starts[i].append(now)
                    return
                self.sleep(wait)


POLICY_LIMITER = WindowLimiter([(REQUESTS_PER_SECOND, 1.0), (REQUESTS_PER_MINUTE, 60.0)])


def parse_throttling(header: str | None) -> dict[str, str]:
    """``X-Throttling-Control`` as {"request count": "green", "request time": ..., "service": ...}."""
    if not header:
        return {}
    return {k.lower(): v.lower() for k, v in _THROTTLE_RE.findall(header)}


class PropertyRow(TypedDict, total=False):
    """One entry of a ``PropertyTable`` after :func:`parse_properties`, in PubChem's key names. The values are
    as PubChem sent them (:func:`compound_from` checks them) except the two numbers; an entry that is not an
    object is ``{"_malformed": <its JSON>}`` (and ``_answer``: what the whole answer was instead)."""

    CID: object
    Title: object
    MolecularFormula: object
    MolecularWeight: float | None
    IUPACName: object
    SMILES: object
    ConnectivitySMILES: object
    InChIKey: object
    XLogP: float | None
    _malformed: str
    _answer: str


class DescriptionEntry(TypedDict):
    """A compound's title and descriptions from ``/description`` (:func:`parse_descriptions`)."""

    title: str
    descriptions: list[tuple[str, str, str]]  # (text, source name, source URL)


@dataclass(frozen=True)
class Compound:
    """What the platform keeps of one PubChem compound."""

    cid: int
    title: str = ""
    formula: str = ""
    weight: float | None = None
    iupac_name: str = ""
    smiles: str = ""
    connectivity_smiles: str = ""
    inchikey: str = ""
    xlogp: float | None = None
    descriptions: tuple[tuple[str, str, str], ...] = ()  # (text, source name, source URL)
    synonyms: tuple[str, ...] = ()

    def to_dict(self) -> CompoundFields:
        """A JSON-serialisable dict (the tuples as lists)."""
        out = asdict(self)
        out["descriptions"] = [list(d) for d in self.descriptions]
        out["synonyms"] = list(self.synonyms)
        return cast(CompoundFields, out)


def _float(value: Any) -> float | None:
    """A finite number, or None (a missing, non-numeric, NaN or infinite value)."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def cid_of(value: Any) -> int:
    """A CID as PubChem writes it (a positive JSON integer, or its digits); raises ValueError for anything
    else: ``1.5``, ``true`` or ``"1e3"`` are not CID 1 or 1000."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"CID {json.dumps(value)[:40]} is not a whole number")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"CID {value[:40]!r} is not a whole number")
        value = int(value)
    if value <= 0:
        raise ValueError(f"CID {value} is not a compound id")
    return value


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list, else [] (PubChem answers are sometimes not the shape they should be)."""
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, object]:
    """``value`` if it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def parse_properties(payload: object) -> list[PropertyRow]:
    """Rows of a ``PropertyTable``, legacy SMILES keys renamed to the current ones, weight as a float.

    An entry that is not an object comes back as ``{"_malformed": <its text>}`` so that staging quarantines it
    instead of the whole answer failing.
    """
    rows: list[PropertyRow] = []
    table = _dict(payload).get("PropertyTable")
    if not isinstance(table, dict) or not isinstance(table.get("Properties"), list):
        fault = _dict(_dict(payload).get("Fault"))
        what = f"a Fault ({fault.get('Code')}: {fault.get('Message')})" if fault else "not a PropertyTable"
        return [{"_malformed": json.dumps(payload)[:500], "_answer": what}]
    for raw in table["Properties"]:
        if not isinstance(raw, dict):
            rows.append({"_malformed": json.dumps(raw)[:500]})
            continue
        row: dict[str, object] = dict(raw)
        for old, new in LEGACY_SMILES.items():
            if old in row and new not in row:
                row[new] = row.pop(old)
            else:
                row.pop(old, None)
        row["MolecularWeight"] = _float(row.get("MolecularWeight"))
        row["XLogP"] = _float(row.get("XLogP"))
        rows.append(cast(PropertyRow, row))  # PubChem's keys, the two numbers checked just above
    return rows


def parse_descriptions(payload: object) -> dict[int, DescriptionEntry]:
    """``InformationList`` of /description as {cid: {"title": ..., "descriptions": [(text, source, url)]}}.

    PubChem sends one record with only the Title, then one record per description with its source. Records
    without a usable CID, and titles or descriptions that are not text, are left out (logged): a compound then
    lacks that description, it is not lost.
    """
    out: dict[int, DescriptionEntry] = {}
    for info in _list(_dict(_dict(payload).get("InformationList")).get("Information")):
        try:
            cid = cid_of(_dict(info).get("CID"))
        except ValueError:
            log.warning("PubChem description record without a usable CID skipped: %s", json.dumps(info)[:200])
            continue
        entry = out.setdefault(cid, {"title": "", "descriptions": []})
        title, text = info.get("Title"), info.get("Description")
        if isinstance(title, str) and title:
            entry["title"] = title
        if isinstance(text, str) and text.strip():
            entry["descriptions"].append(
                (
                    text.strip(),
                    str(info.get("DescriptionSourceName") or ""),
                    str(info.get("DescriptionURL") or ""),
                )
            )
        elif text is not None or (title is not None and not isinstance(title, str)):
            log.warning("PubChem description of CID %s is not text; skipped", cid)
    return out


class AnswerShapeError(ValueError):
    """PubChem answered JSON, but not in the shape the request promises; ``raw`` holds (the start of) it."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def _json(resp: requests.Response) -> Any:
    """The JSON body of a PubChem answer; raises :class:`SourceError` naming the URL when it is not JSON (an
    HTML error page from a proxy, a truncated body)."""
    try:
        return resp.json()
    except RecursionError:
        raise SourceError(
            "PubChem answered JSON nested too deep to read", url=resp.url, attempts=1, status=resp.status_code
        ) from None
    except ValueError:
        kind = resp.headers.get("Content-Type", "no content type")
        raise SourceError(
            f"PubChem answered {kind}, not JSON: {resp.text[:80]!r}",
            url=resp.url,
            attempts=1,
            status=resp.status_code,
        ) from None


def fault_of(resp: requests.Response) -> dict[str, object] | None:
    """The ``Fault`` object of a PUG REST error answer, or None when the body is not one (e.g. HTML)."""
    try:
        body = resp.json()
    except (ValueError, RecursionError):
        return None
    fault = body.get("Fault") if isinstance(body, dict) else None
    return fault if isinstance(fault, dict) else None


def _text(row: PropertyRow, key: str) -> str:
    """A text property; raises ValueError when PubChem sent something else (a list, a number, an object)."""
    value = cast(dict[str, object], row).get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} is a {type(value).__name__}, not text")
    return value


def compound_from(row: PropertyRow, desc: DescriptionEntry | None) -> Compound:
    """A :class:`Compound` from a parsed property row and its description entry; raises KeyError, ValueError or
    TypeError for a row that is not a usable compound (staging quarantines it)."""
    if "_malformed" in row:
        what = row.get("_answer") or "property entry is not an object"
        raise ValueError(f"{what}: {row['_malformed'][:200]}")
    if "CID" not in row:
        raise ValueError("property entry has no CID")
    cid = cid_of(row["CID"])
    return Compound(
        cid=cid,
        title=_text(row, "Title") or (desc["title"] if desc else ""),
        formula=_text(row, "MolecularFormula"),
        weight=row.get("MolecularWeight"),
        iupac_name=_text(row, "IUPACName"),
        smiles=_text(row, "SMILES"),
        connectivity_smiles=_text(row, "ConnectivitySMILES"),
        inchikey=_text(row, "InChIKey"),
        xlogp=row.get("XLogP"),
        descriptions=tuple(desc["descriptions"]) if desc else (),
    )


class PubChemClient:
    """PUG REST under the usage policy (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        limiter: WindowLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = HTTP_TIMEOUT_S,
        batch_size: int = 100,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.limiter = limiter or POLICY_LIMITER
        self.retry = retry or RetryPolicy(retry_statuses=frozenset({500, 502, 503, 504}))
        self.http = PoliteClient(
            limiter=self.limiter,
            retry=self.retry,
            timeout_s=timeout_s,
            on_response=self._watch_throttling,
            max_bytes=max_bytes,
        )
        self.throttle_events: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> PubChemClient:
        """A client on the configured endpoint and retry policy, sharing the process-wide policy limiter."""
        retry = RetryPolicy(
            max_attempts=settings.http_max_attempts,
            base_s=settings.http_backoff_s,
            retry_statuses=frozenset({500, 502, 503, 504}),
        )
        return cls(
            settings.pubchem_url,
            retry=retry,
            timeout_s=settings.http_timeout_s,
            max_bytes=settings.http_max_bytes,
            **kwargs,
        )

    def _watch_throttling(self, resp: requests.Response) -> None:
        status = parse_throttling(resp.headers.get("X-Throttling-Control"))
        if not status:
            return
        worst = max(status.values(), key=lambda s: _STATUS_RANK.get(s, 0))
        rank = _STATUS_RANK.get(worst, 0)
        if rank == 3:
            self.throttle_events.append("black")
            raise PubChemThrottled(
                f"PubChem is blocking requests (X-Throttling-Control: "
                f"{resp.headers['X-Throttling-Control']}); stop and try again later",
                url=resp.url,
                attempts=1,
                status=resp.status_code,
            )
        # Green: full policy rate; Yellow: half; Red: a quarter.
        new = (1.0, 2.0, 4.0)[rank]
        if new != self.limiter.slowdown:
            log.warning("PubChem throttling status %s: request rate x%.2f", worst, 1 / new)
            self.throttle_events.append(worst)
            self.limiter.slowdown = new

    def _post(self, path: str, data: dict[str, str]) -> requests.Response:
        resp = self.http.post(f"{self.base_url}{path}", data=data)
        if resp.status_code == 404:
            return resp
        if resp.status_code >= 400:
            fault = fault_of(resp) or {}
            raise SourceError(
                f"PubChem {fault.get('Code', f'HTTP {resp.status_code}')}: "
                f"{fault.get('Message', resp.text[:200])}",
                url=resp.url,
                attempts=1,
                status=resp.status_code,
            )
        return resp

    def cids_for_name(self, name: str) -> list[int]:
        """CIDs whose name or synonym is ``name`` (best match first); [] when PubChem has none (a 404).
        Raises :class:`AnswerShapeError` when the answer is JSON of another shape: that is not "no such
        name", and must not be remembered as one."""
        resp = self._post("/compound/name/cids/JSON", {"name": name})
        if resp.status_code == 404:
            return []
        body = _json(resp)
        listed = _dict(_dict(body).get("IdentifierList")).get("CID")
        if not isinstance(listed, list):
            raise AnswerShapeError(
                f"PubChem's answer for the name {name!r} has no IdentifierList.CID list",
                raw=json.dumps(body)[:2000],
            )
        cids = []
        for c in listed:
            try:
                cids.append(cid_of(c))
            except ValueError:
                log.warning("PubChem answered a CID that is not a number for %r: %r", name, c)
        return cids

    def properties(self, cids: Iterable[int]) -> list[PropertyRow]:
        """Property rows for ``cids`` (batched POSTs); CIDs PubChem does not know are absent."""
        rows: list[PropertyRow] = []
        ids = list(dict.fromkeys(int(c) for c in cids))
        for i in range(0, len(ids), self.batch_size):
            batch = ids[i : i + self.batch_size]
            resp = self._post(
                f"/compound/cid/property/{','.join(PROPERTIES)}/JSON", {"cid": ",".join(map(str, batch))}
            )
            if resp.status_code != 404:
                rows.extend(parse_properties(_json(resp)))
        return rows

    def descriptions(self, cids: Iterable[int]) -> dict[int, DescriptionEntry]:
        """Titles and descriptions for ``cids`` (batched POSTs)."""
        out: dict[int, DescriptionEntry] = {}
        ids = list(dict.fromkeys(int(c) for c in cids))
        for i in range(0, len(ids), self.batch_size):
            resp = self._post(
                "/compound/cid/description/JSON", {"cid": ",".join(map(str, ids[i : i + self.batch_size]))}
            )
            if resp.status_code != 404:
                out.update(parse_descriptions(_json(resp)))
        return out

    def compounds(self, cids: Iterable[int]) -> list[Compound]:
        """Full :class:`Compound` records for ``cids``: two batched requests per ``batch_size`` CIDs."""
        ids = list(dict.fromkeys(int(c) for c in cids))
        rows = self.properties(ids)
        rows = [r for r in rows if isinstance(r.get("CID"), int) and not isinstance(r.get("CID"), bool)]
        descs = self.descriptions([cid_of(r["CID"]) for r in rows])
        return [compound_from(r, descs.get(cid_of(r["CID"]))) for r in rows]
