"""arXiv: the export API (Atom) for submission windows, and the daily RSS feed for announcements.

Limits, from arXiv's API terms of use (https://info.arxiv.org/help/api/tou.html): one request at a time,
no more than one every 3 seconds (``CBNANO_ARXIV_DELAY_S``), at most 2,000 results per request and
30,000 per query. The client pages with ``start``/``max_results`` and takes the next ``start`` from what
was actually returned, because arXiv sometimes answers with short or empty pages.

Parsing uses ElementTree for the API (strict XML, faithful raw text, both the 2026 and the legacy
pre-2025 layout) and feedparser for RSS (the 2024+ format with ``arxiv:announce_type``).

Usage::

    client = ArxivClient.from_settings(get_settings())
    for page in client.iter_window_pages(["cond-mat.mtrl-sci"], start, end):
        parsed = parse_api_feed(page.body)
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import requests

from pipelines.contracts import PaperFields
from pipelines.settings import ARXIV_DELAY_S, HTTP_TIMEOUT_S, Settings
from pipelines.sources.http import (
    MAX_RESPONSE_BYTES,
    MinIntervalLimiter,
    PoliteClient,
    RetryPolicy,
    SourceError,
    TransientResponse,
)
from pipelines.windows import FIRST_YEAR

log = logging.getLogger(__name__)

NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
}
DEFAULT_CATEGORIES = ("cond-mat.mtrl-sci", "physics.chem-ph")
MAX_PAGE_SIZE = 2000  # arXiv's per-request cap
MAX_QUERY_RESULTS = 30000  # arXiv's per-query cap

# old-style archive names are short ("cond-mat", "solv-int"): a 200-letter one is not an arXiv id
_ID_BODY = r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]{0,15}(?:\.[A-Z]{2})?/\d{7})(?:v(?P<version>\d+))?"
MAX_VERSION = 100_000  # arXiv papers have a handful of versions; a larger number is a broken feed
# an abs URL on arXiv's own hosts, or a bare id: an id inside a URL of another host is not an arXiv paper
_ID_URL_RE = re.compile(rf"https?://(?:www\.|export\.)?arxiv\.org/abs/{_ID_BODY}")
_ID_BARE_RE = re.compile(_ID_BODY)

# arXiv's category taxonomy (https://arxiv.org/category_taxonomy): a typo would otherwise fetch 0 papers
ARXIV_CATEGORIES = frozenset(
    [
        f"cs.{c}"
        for c in "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI "
        "OH OS PF PL RO SC SD SE SI SY".split()
    ]
    + [f"econ.{c}" for c in "EM GN TH".split()]
    + [f"eess.{c}" for c in "AS IV SP SY".split()]
    + [
        f"math.{c}"
        for c in "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA "
        "RT SG SP ST".split()
    ]
    + ["astro-ph"]
    + [f"astro-ph.{c}" for c in "CO EP GA HE IM SR".split()]
    + ["cond-mat"]
    + [
        f"cond-mat.{c}"
        for c in "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con".split()
    ]
    + "gr-qc hep-ex hep-lat hep-ph hep-th math-ph nucl-ex nucl-th quant-ph".split()
    + [f"nlin.{c}" for c in "AO CD CG PS SI".split()]
    + [
        f"physics.{c}"
        for c in "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an "
        "ed-ph flu-dyn gen-ph geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph "
        "space-ph".split()
    ]
    + [f"q-bio.{c}" for c in "BM CB GN MN NC OT PE QM SC TO".split()]
    + [f"q-fin.{c}" for c in "CP EC GN MF PM PR RM ST TR".split()]
    + [f"stat.{c}" for c in "AP CO ME ML OT TH".split()]
)
_ERROR_ID_RE = re.compile(r"^https?://(?:export\.)?arxiv\.org/api/errors")
_CATEGORY_RE = re.compile(r"^[a-z][a-z\-]*(?:\.[A-Za-z\-]+)?\Z")


class ArxivQueryError(SourceError):
    """arXiv answered with an error feed (e.g. a malformed query); names the query."""


class FeedFormatError(ValueError):
    """The body is not an arXiv Atom feed (blank, HTML, truncated XML)."""


@dataclass(frozen=True)
class Paper:
    """One arXiv paper as the API or RSS describes it; ``arxiv_id`` is versionless."""

    arxiv_id: str
    version: int
    title: str
    abstract: str
    authors: list[str]
    primary_category: str
    categories: list[str]
    published: str | None  # first version's submission time, ISO 8601 UTC
    updated: str | None  # this version's submission time, ISO 8601 UTC
    doi: str | None = None
    journal_ref: str | None = None
    comment: str | None = None
    announce_type: str | None = None  # RSS only: new, cross, replace, replace-cross
    url: str = ""

    def to_dict(self) -> PaperFields:
        """A JSON-serialisable dict of every field."""
        return cast(PaperFields, asdict(self))


@dataclass
class ParsedFeed:
    """One API page: totals from the opensearch header, the good entries, and the rejected ones."""

    total_results: int
    start_index: int
    items_per_page: int
    papers: list[Paper] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)

    @property
    def entry_count(self) -> int:
        """Entries on the page, good or rejected (what the next ``start`` advances by)."""
        return len(self.papers) + len(self.rejects)


@dataclass(frozen=True)
class FetchedPage:
    """A raw API page as received, with what paging needed from it."""

    start: int
    url: str
    body: bytes
    entry_count: int
    total_results: int
    part: int = 0  # which piece of a window split to stay under arXiv's per-query cap (0: not split)


def parse_arxiv_id(raw: str) -> tuple[str, int | None]:
    """Split an id or abs URL into (versionless id, version or None); raises ValueError if not an arXiv id."""
    text = raw.strip()
    m = (_ID_URL_RE if "://" in text else _ID_BARE_RE).fullmatch(text)
    if not m:
        raise ValueError(f"not an arXiv id: {raw!r}")
    version = m.group("version")
    if version and (len(version) > 6 or not 1 <= int(version) <= MAX_VERSION):
        raise ValueError(f"not an arXiv version: v{version[:30]} in {raw[:80]!r}")
    return m.group("id"), int(version) if version else None


def _iso_utc(raw: str | None) -> str | None:
    if not raw:
        return None
    dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(el: ET.Element, path: str) -> str | None:
    found = el.find(path, NS)
    if found is None or found.text is None:
        return None
    return found.text


def _int(root: ET.Element, path: str, default: int) -> int:
    raw = _text(root, path)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _parse_entry(entry: ET.Element) -> Paper:
    raw_id = _text(entry, "atom:id")
    if not raw_id:
        raise ValueError("entry has no <id>")
    arxiv_id, version = parse_arxiv_id(raw_id)
    title = _text(entry, "atom:title")
    abstract = _text(entry, "atom:summary")
    if not title or not title.strip():
        raise ValueError("entry has no title")
    if not abstract or not abstract.strip():
        raise ValueError("entry has no abstract")
    published = _iso_utc(_text(entry, "atom:published"))
    if published is None:
        raise ValueError("entry has no <published> date")
    updated = _iso_utc(_text(entry, "atom:updated")) or published
    categories = [c.get("term", "") for c in entry.findall("atom:category", NS) if c.get("term")]
    primary_el = entry.find("arxiv:primary_category", NS)
    primary = primary_el.get("term", "") if primary_el is not None else ""
    primary = primary or (categories[0] if categories else "")
    if primary and primary not in categories:
        categories.insert(0, primary)
    authors = [(a.findtext("atom:name", "", NS) or "").strip() for a in entry.findall("atom:author", NS)]
    url = ""
    for link in entry.findall("atom:link", NS):
        if link.get("rel") == "alternate" and link.get("href"):
            url = link.get("href", "")
    return Paper(
        arxiv_id=arxiv_id,
        version=version or 1,
        title=title,
        abstract=abstract,
        authors=[a for a in authors if a],
        primary_category=primary,
        categories=categories,
        published=published,
        updated=updated,
        doi=(_text(entry, "arxiv:doi") or "").strip() or None,
        journal_ref=(_text(entry, "arxiv:journal_ref") or "").strip() or None,
        comment=(_text(entry, "arxiv:comment") or "").strip() or None,
        url=url or f"https://arxiv.org/abs/{arxiv_id}v{version or 1}",
    )


FORBIDDEN_MARK = "\ufffd\u2063forbidden\u2063\ufffd"  # stands for a forbidden character in a marked page
# XML 1.0 allows tab, newline and carriage return below 0x20; a reference to any other control character
# (decimal or hex), and the raw byte itself, make a page unreadable
_FORBIDDEN_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCe-fE-F]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
_FORBIDDEN_RAW = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _mark_forbidden_chars(body: bytes) -> tuple[bytes, int]:
    """``body`` with each forbidden character (raw or referenced) replaced by :data:`FORBIDDEN_MARK`, and
    how many there were."""
    mark = FORBIDDEN_MARK.encode()
    body, refs = _FORBIDDEN_REF.subn(mark, body)
    body, raw = _FORBIDDEN_RAW.subn(mark, body)
    return body, refs + raw


def parse_api_feed(body: bytes, query: str = "") -> ParsedFeed:
    """Parse an export-API Atom page (2026 or legacy layout).

    Returns the page's totals and papers; an entry that cannot be read goes to ``rejects`` with its reason
    and raw XML. Raises :class:`ArxivQueryError` for an error feed and :class:`FeedFormatError` when the
    body is not an Atom feed at all.
    """
    if not body or not body.strip():
        raise FeedFormatError("blank body")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        # one character XML forbids (a control character, raw or as a reference like &#x1;) makes the whole
        # page unreadable; mark it and read the page again, so only the entries holding it are rejected
        marked, n = _mark_forbidden_chars(body)
        if not n:
            raise FeedFormatError(f"not XML: {exc}") from None
        try:
            root = ET.fromstring(marked)
        except ET.ParseError:
            raise FeedFormatError(f"not XML: {exc}") from None
    if root.tag != f"{{{NS['atom']}}}feed":
        raise FeedFormatError(f"not an Atom feed (root element {root.tag!r})")
    entries = root.findall("atom:entry", NS)
    for entry in entries:
        if _ERROR_ID_RE.match(_text(entry, "atom:id") or ""):
            message = (_text(entry, "atom:summary") or "unknown error").strip()
            raise ArxivQueryError(
                f"arXiv rejected the query {query!r}: {message}", url=query, attempts=1, status=400
            )
    feed = ParsedFeed(
        total_results=_int(root, "opensearch:totalResults", -1),  # -1: the feed does not say
        start_index=_int(root, "opensearch:startIndex", 0),
        items_per_page=_int(root, "opensearch:itemsPerPage", len(entries)),
    )
    for entry in entries:
        try:
            if FORBIDDEN_MARK in ET.tostring(entry, encoding="unicode"):
                raise ValueError("the entry holds a character XML forbids (a control character)")
            feed.papers.append(_parse_entry(entry))
        except ValueError as exc:
            feed.rejects.append(
                {
                    "reason": str(exc),
                    "entry_id": (_text(entry, "atom:id") or "").strip(),
                    "raw": ET.tostring(entry, encoding="unicode"),
                }
            )
    return feed


def parse_rss(body: bytes) -> list[Paper]:
    """Parse the daily RSS feed (2024+ format) into papers carrying ``announce_type``.

    RSS gives no submission dates, so ``published``/``updated`` are None; the abstract is the text after
    ``Abstract:`` in the description. Items without an arXiv id are skipped with a warning.
    """
    import feedparser  # local import: only the RSS reader needs it

    parsed = feedparser.parse(body)
    papers = []
    for item in parsed.entries:
        try:
            arxiv_id, version = parse_arxiv_id(item.get("id", "").removeprefix("oai:arXiv.org:"))
        except ValueError:
            log.warning("RSS item without an arXiv id skipped: %r", item.get("title"))
            continue
        description = item.get("summary", "")
        abstract = description.split("Abstract:", 1)[1] if "Abstract:" in description else description
        categories = [t.get("term") for t in item.get("tags", []) if t.get("term")]
        authors = [a.strip() for a in item.get("author", "").split(",") if a.strip()]
        papers.append(
            Paper(
                arxiv_id=arxiv_id,
                version=version or 1,
                title=item.get("title", ""),
                abstract=abstract.strip(),
                authors=authors,
                primary_category=categories[0] if categories else "",
                categories=categories,
                published=None,
                updated=None,
                doi=item.get("arxiv_doi") or None,
                journal_ref=item.get("arxiv_journal_reference") or None,
                announce_type=item.get("arxiv_announce_type") or None,
                url=item.get("link", f"https://arxiv.org/abs/{arxiv_id}"),
            )
        )
    return papers


def validate_categories(categories: Sequence[str]) -> None:
    """Raise ValueError naming the first string that is not an arXiv category (or if there are none)."""
    if not categories:
        raise ValueError("at least one category is required")
    for cat in categories:
        if not _CATEGORY_RE.match(cat):
            raise ValueError(f"not an arXiv category: {cat!r}")
        if cat not in ARXIV_CATEGORIES:
            import difflib

            near = difflib.get_close_matches(cat, sorted(ARXIV_CATEGORIES), n=1)
            raise ValueError(
                f"not an arXiv category: {cat!r}" + (f" (did you mean {near[0]}?)" if near else "")
            )


def build_window_query(categories: Sequence[str], start: datetime, end: datetime) -> str:
    """The ``search_query`` for papers in ``categories`` submitted in [start, end) UTC.

    arXiv's ``submittedDate:[A TO B]`` is inclusive at minute resolution, so B is ``end`` minus a minute.
    """
    validate_categories(categories)
    if start >= end:
        raise ValueError(f"window start {start.isoformat()} is not before end {end.isoformat()}")
    if start.astimezone(UTC).year < FIRST_YEAR:
        raise ValueError(f"window start {start.date().isoformat()} is before arXiv began ({FIRST_YEAR})")
    fmt = "%Y%m%d%H%M"
    last = end.astimezone(UTC) - timedelta(minutes=1)
    cats = " OR ".join(f"cat:{c}" for c in categories)
    cats = f"({cats})" if len(categories) > 1 else cats
    return f"{cats} AND submittedDate:[{start.astimezone(UTC).strftime(fmt)} TO {last.strftime(fmt)}]"


class ArxivClient:
    """The export API and RSS feed behind one polite HTTP client (see module docstring for the limits)."""

    def __init__(
        self,
        api_url: str,
        rss_url: str,
        *,
        delay_s: float = ARXIV_DELAY_S,
        page_size: int = 200,
        retry: RetryPolicy | None = None,
        timeout_s: float = HTTP_TIMEOUT_S,
        http: PoliteClient | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ):
        self.max_query_results = MAX_QUERY_RESULTS
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        self.api_url = api_url
        self.rss_url = rss_url.rstrip("/")
        self.page_size = page_size
        self.http = http or PoliteClient(
            limiter=MinIntervalLimiter(delay_s), retry=retry, timeout_s=timeout_s, max_bytes=max_bytes
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ArxivClient:
        """A client on the configured endpoints, delay and retry policy."""
        retry = RetryPolicy(max_attempts=settings.http_max_attempts, base_s=settings.http_backoff_s)
        return cls(
            settings.arxiv_api_url,
            settings.arxiv_rss_url,
            delay_s=settings.arxiv_delay_s,
            retry=retry,
            timeout_s=settings.http_timeout_s,
            max_bytes=settings.http_max_bytes,
            **kwargs,
        )

    def iter_window_pages(
        self, categories: Sequence[str], start: datetime, end: datetime, max_results: int | None = None
    ) -> Iterator[FetchedPage]:
        """Yield raw API pages for papers submitted in [start, end), oldest first.

        Stops when ``totalResults`` is reached (or ``max_results`` entries were returned). An empty page
        before the total is reached, or a feed without ``totalResults``, is retried; if it stays so the fetch
        fails with :class:`SourceError` rather than silently returning fewer papers. arXiv serves at most
        30,000 results per query: a larger window is split in time (pages then carry ``part``), and a
        one-minute window that is still larger fails naming the limit; nothing is cut silently.
        """
        if max_results is not None:  # the caller asked for at most this many: no splitting
            yield from self._window_pages(categories, start, end, max_results, part=0)
            return
        pending = [(start, end)]
        part = 0
        while pending:
            lo, hi = pending.pop(0)
            query = build_window_query(categories, lo, hi)
            first = self._page(query, 0, min(self.page_size, self.max_query_results))
            if first.total_results <= self.max_query_results:
                part += 1 if (part or len(pending) or (lo, hi) != (start, end)) else 0
                yield from self._window_pages(categories, lo, hi, None, part=part, first=first)
                continue
            minutes = int((hi - lo).total_seconds() // 60)
            if minutes < 2:
                raise SourceError(
                    f"{first.total_results} papers were submitted in the minute {lo.isoformat()} "
                    f"for {query!r}, above arXiv's {self.max_query_results} results per query",
                    url=first.url,
                    attempts=1,
                )
            mid = lo + timedelta(minutes=minutes // 2)
            log.info(
                "%s: %d results exceed arXiv's %d per query; splitting the window at %s",
                query,
                first.total_results,
                self.max_query_results,
                mid.isoformat(),
            )
            pending[:0] = [(lo, mid), (mid, hi)]

    def _page(self, query: str, offset: int, size: int) -> FetchedPage:
        """One API page (retried while it is not a feed, lacks its total, or is empty before the total)."""
        params = {
            "search_query": query,
            "start": offset,
            "max_results": size,
            "sortBy": "submittedDate",
            "sortOrder": "ascending",
        }
        seen: dict[str, ParsedFeed] = {}

        def validate(resp: requests.Response) -> None:
            try:
                parsed = parse_api_feed(resp.content, query)
            except FeedFormatError as exc:
                raise TransientResponse(str(exc)) from None
            if parsed.total_results < 0:
                raise TransientResponse("feed without opensearch:totalResults")
            if parsed.entry_count == 0 and offset < parsed.total_results:
                raise TransientResponse(f"empty page at start={offset} of {parsed.total_results}")
            seen["feed"] = parsed

        resp = self.http.get(self.api_url, params=params, validate=validate)
        if resp.status_code >= 400:
            # arXiv's error feed (HTTP 400 + an Error entry) becomes ArxivQueryError here.
            parse_api_feed(resp.content, query)
            raise SourceError(
                f"HTTP {resp.status_code} for query {query!r}",
                url=resp.url,
                attempts=1,
                status=resp.status_code,
            )
        parsed = seen["feed"]
        return FetchedPage(
            start=offset,
            url=resp.url,
            body=resp.content,
            entry_count=parsed.entry_count,
            total_results=parsed.total_results,
        )

    def _window_pages(
        self,
        categories: Sequence[str],
        start: datetime,
        end: datetime,
        max_results: int | None,
        part: int,
        first: FetchedPage | None = None,
    ) -> Iterator[FetchedPage]:
        """The pages of one query, up to its total (or ``max_results``, at most arXiv's cap)."""
        query = build_window_query(categories, start, end)
        cap = min(max_results or self.max_query_results, self.max_query_results)
        offset = 0
        total: int | None = None
        while total is None or offset < min(total, cap):
            size = min(self.page_size, cap - offset)
            page = first if first is not None and offset == 0 else self._page(query, offset, size)
            if page.entry_count > size:  # the first page was asked for with the full page size
                page = self._page(query, offset, size)
            total = page.total_results
            yield FetchedPage(
                start=page.start,
                url=page.url,
                body=page.body,
                entry_count=page.entry_count,
                total_results=total,
                part=part,
            )
            offset += page.entry_count
            if page.entry_count == 0:
                break

    def fetch_rss(self, category: str) -> bytes:
        """The raw RSS feed of today's announcements in ``category``."""

        def validate(resp: requests.Response) -> None:
            if not resp.content.strip() or b"<rss" not in resp.content[:2000]:
                raise TransientResponse("not an RSS document")

        resp = self.http.get(f"{self.rss_url}/{category}", validate=validate)
        if resp.status_code >= 400:
            raise SourceError(
                f"HTTP {resp.status_code} for RSS {category}",
                url=resp.url,
                attempts=1,
                status=resp.status_code,
            )
        return resp.content
