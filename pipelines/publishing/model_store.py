"""The model store: published domain models under ``CBNANO_MODEL_STORE`` (NFS ``/exports/models`` in the lab).

Layout::

    <root>/<domain>/versions/<version>/   adapter/, merged/, manifest.json, MODEL_CARD.md, eval.json, ...
    <root>/<domain>/production            symlink -> versions/<version>
    <root>/<domain>/history.jsonl         every action (publish, promote, rollback, delete, reject): who, why
    <root>/base/<name>/                   base models, by the name adapters and model cards use
    <root>/base/bases.json                bases kept elsewhere: name -> folder (the store says where each lives)
    <root>/.staging/                      versions being assembled (same filesystem, so rename is atomic)

Rules:

* every finished candidate becomes a version, whether or not the gate moved production to it; a version
  directory is immutable once published: publishing an existing version is refused;
* publishing assembles the version under ``.staging/``, writes ``manifest.json`` with the sha256 of every file,
  then renames it into ``versions/`` in one step: a crash leaves at most a stale staging folder, never a
  half-written version, and production untouched;
* the production pointer moves atomically (a new symlink renamed over the old one);
* promote and rollback verify the target's checksums first, and refuse a test model (``test_model`` in its
  manifest: a random-init base or the ``tiny`` profile) unless the caller allows test models;
* every action is recorded in ``history.jsonl`` with who did it (``actor``) and why (``reason``);
* a version published with ``"approval": "required"`` in its manifest (``CBNANO_REQUIRE_APPROVAL``) waits for
  a person: approving it is a promote, refusing it a ``reject`` record; :meth:`ModelStore.approval` says which;
* retention keeps production, the previous production and ``keep_last`` others, deleting versions that never
  were production before ones that were, oldest first.

Usage::

    store = ModelStore(settings.model_store)
    store.publish("catalysis", "2026-11-3f2a9c", staged_dir, {"metrics": {...}}, promote=gate.publish,
                  actor="airflow:domain_retraining/scheduled__2026-12-01", reason=gate.reason)
    store.promote("catalysis", "2026-11-3f2a9c", actor="alice", reason="reviewed the held-out samples")
    store.rollback("catalysis", actor="alice", reason="regression reported by the lab")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

from pipelines.lake import sha256_file, write_json

log = logging.getLogger(__name__)
STALE_STAGING_S = 24 * 3600  # a staging folder this old belongs to a publish that died
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"  # per domain: held (flock) while the production pointer moves and history is appended


class ModelStoreError(RuntimeError):
    """A refused or failed store operation; the message says which domain/version and why."""


class HistoryEntry(TypedDict):
    """One line of ``<domain>/history.jsonl``."""

    at: str
    action: str  # publish, promote, rollback, delete, reject, export
    version: str
    actor: str
    reason: str


class VersionDict(TypedDict):
    """A version as ``cbnano models list --json`` prints it."""

    domain: str
    version: str
    path: str
    production: bool
    published_at: str
    metrics: dict[str, float]
    problems: list[str]
    decision: str  # "passed" or "refused" by the gate; "" where the manifest does not say


@dataclass(frozen=True)
class VersionInfo:
    """One published version as ``cbnano models list`` shows it."""

    domain: str
    version: str
    path: Path
    production: bool
    published_at: str
    metrics: dict[str, float]  # the candidate's, from the manifest
    problems: tuple[str, ...] = ()  # filled by ModelStore.versions(verify=True) and unreadable manifests
    decision: str = ""  # the gate's: "passed", "refused", or "" where the manifest has no gate record

    def to_dict(self) -> VersionDict:
        """JSON-friendly form."""
        return {
            "domain": self.domain,
            "version": self.version,
            "path": str(self.path),
            "production": self.production,
            "published_at": self.published_at,
            "metrics": self.metrics,
            "problems": list(self.problems),
            "decision": self.decision,
        }


def _decision(gate: object) -> str:
    """ "passed" / "refused" from a manifest's gate record, "" when there is none or it does not say."""
    publish = gate.get("publish") if isinstance(gate, dict) else None
    return {True: "passed", False: "refused"}.get(publish, "") if isinstance(publish, bool) else ""


def default_actor() -> str:
    """Who acts when nobody says: ``CBNANO_ACTOR``, else the login name."""
    import getpass

    try:
        return os.environ.get("CBNANO_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return f"uid:{os.getuid()}"


def _check(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise ModelStoreError(f"invalid {kind} name {value!r}: letters, digits, '.', '_' and '-' only")
    return value


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative POSIX paths), the manifest itself excluded."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk (so a rename publishes complete files)."""
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True) + [root]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ModelStore:
    """Published models of every domain under one root folder (see module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._local = threading.local()  # the domains whose lock this thread holds

    def _domain(self, domain: str) -> Path:
        return self.root / _check("domain", domain)

    def version_dir(self, domain: str, version: str) -> Path:
        """Where a version lives (whether or not it exists)."""
        return self._domain(domain) / "versions" / _check("version", version)

    def publish(
        self,
        domain: str,
        version: str,
        content: Path,
        manifest: dict[str, Any],
        promote: bool = True,
        actor: str = "",
        reason: str = "",
        allow_test_models: bool = True,
    ) -> Path:
        """Copy ``content`` into a new immutable version with a checksummed manifest; returns its path.

        With ``promote`` the production pointer then moves to it (subject to the test-model rule). Raises
        :class:`ModelStoreError` if the version exists or ``content`` is not a folder.
        """
        target = self.version_dir(domain, version)
        if target.exists():
            raise ModelStoreError(f"{domain}/{version} is already published; versions are immutable")
        if not Path(content).is_dir():
            raise ModelStoreError(f"nothing to publish: {content} is not a folder")
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        self.clean_staging()
        staging = Path(tempfile.mkdtemp(prefix=f"{domain}-{version}-", dir=staging_root))
        try:
            shutil.copytree(content, staging, dirs_exist_ok=True)
            files = file_hashes(staging)
            write_json(
                staging / MANIFEST,
                {
                    **manifest,
                    "domain": domain,
                    "version": version,
                    "files": files,
                    "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
            fsync_tree(staging)  # the rename below must not publish files still in the page cache
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)  # atomic on one filesystem; fails if target appeared meanwhile
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log(domain, "publish", version, actor, reason)
        if promote:
            self._point(domain, version, "promote", actor, reason, allow_test_models)
        return target

    def verify(self, domain: str, version: str) -> list[str]:
        """Problems with a version's files against its manifest (missing, changed, unlisted); [] if intact."""
        vdir = self.version_dir(domain, version)
        mpath = vdir / MANIFEST
        if not mpath.is_file():
            return [f"{domain}/{version}: no {MANIFEST}"]
        try:
            expected = dict(json.loads(mpath.read_text())["files"])
        except (ValueError, KeyError, TypeError) as exc:
            return [f"{domain}/{version}: {MANIFEST} is unreadable ({type(exc).__name__})"]
        actual = file_hashes(vdir)
        problems = [f"missing {f}" for f in sorted(set(expected) - set(actual))]
        problems += [f"changed {f}" for f in sorted(set(expected) & set(actual)) if expected[f] != actual[f]]
        problems += [f"unlisted {f}" for f in sorted(set(actual) - set(expected))]
        return problems

    def production(self, domain: str) -> str | None:
        """The version production points at, or None (also for a pointer that is not ``versions/<name>``,
        which :meth:`check` reports)."""
        link = self._domain(domain) / "production"
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link))
        if len(target.parts) != 2 or target.parts[0] != "versions" or not _NAME.match(target.name):
            return None
        return target.name

    def check(self, domain: str) -> list[str]:
        """Problems with a domain's production pointer and history (each one line); [] if sound."""
        problems = []
        link = self._domain(domain) / "production"
        if link.is_symlink():
            target = os.readlink(link)
            version = self.production(domain)
            if version is None:
                problems.append(f"{domain}: production points outside the store's versions: {target}")
            elif not self.version_dir(domain, version).is_dir():
                problems.append(f"{domain}: production points at {version}, which does not exist")
        elif link.exists():
            problems.append(f"{domain}: production is not a pointer (symlink)")
        problems += [f"{domain}: {p}" for p in self._history_problems(domain)]
        return problems

    def clean_staging(self, max_age_s: float = STALE_STAGING_S) -> list[str]:
        """Delete staging folders older than ``max_age_s`` (publishes that died); returns their names."""
        import time

        removed = []
        for p in sorted((self.root / ".staging").glob("*")):
            try:
                old = time.time() - p.stat().st_mtime > max_age_s
            except OSError:
                continue
            if old:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
                log.warning("removed stale staging folder %s (a publish that did not finish)", p)
        return removed

    def interrupted_promotion(self, domain: str, version: str) -> bool:
        """True when ``version`` was published to become production (its gate said so) but the pointer never
        moved to it, and nobody moved production since it was published: a crash between the rename and the
        pointer move, which a retry should complete."""
        try:
            man = self.manifest(domain, version)
        except ModelStoreError:
            return False
        if not (man.get("gate") or {}).get("publish") or self.production(domain) == version:
            return False
        if man.get("approval") == "required":  # it moves when a person approves it, never by a retry
            return False
        since = str(man.get("published_at", ""))
        return not any(
            m.get("action") in ("promote", "rollback") and str(m.get("at", "")) >= since
            for m in self.history(domain)
        )

    def manifest(self, domain: str, version: str) -> dict[str, Any]:
        """A version's manifest; raises :class:`ModelStoreError` if it is missing or unreadable."""
        path = self.version_dir(domain, version) / MANIFEST
        try:
            man = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"{domain}/{version}: cannot read {MANIFEST}: {exc}") from None
        if not isinstance(man, dict):
            raise ModelStoreError(
                f"{domain}/{version}: {MANIFEST} is a JSON {type(man).__name__}, not an object"
            )
        return man

    def promote(
        self, domain: str, version: str, actor: str = "", reason: str = "", allow_test_models: bool = False
    ) -> None:
        """Point production at ``version`` after verifying its checksums (see module docstring)."""
        self._point(domain, version, "promote", actor, reason, allow_test_models)

    def rollback(
        self,
        domain: str,
        version: str | None = None,
        actor: str = "",
        reason: str = "",
        allow_test_models: bool = False,
    ) -> str:
        """Point production back at ``version`` (default: the one before the current); returns it."""
        with self._locked(domain):  # what "the one before" is cannot change under a concurrent promote
            current = self.production(domain)
            if version is None:
                moves = [m for m in self.history(domain) if m["action"] in ("promote", "rollback")]
                previous = [m["version"] for m in moves if m["version"] != current]
                if not previous:
                    raise ModelStoreError(f"{domain}: no earlier production version to roll back to")
                version = previous[-1]
            self._point(domain, version, "rollback", actor, reason, allow_test_models)
        return version

    def reject(self, domain: str, version: str, actor: str = "", reason: str = "") -> None:
        """Record that a person refused ``version`` for production (why, in ``reason``); production stays."""
        if not self.version_dir(domain, version).is_dir():
            raise ModelStoreError(f"{domain}/{version} is not published")
        self._log(domain, "reject", version, actor, reason)

    def record_export(self, domain: str, version: str, actor: str = "", reason: str = "") -> None:
        """Record that ``version`` was exported (``reason``: the format and where it went)."""
        if not self.version_dir(domain, version).is_dir():
            raise ModelStoreError(f"{domain}/{version} is not published")
        self._log(domain, "export", version, actor, reason)

    def approval(self, domain: str, version: str, manifest: Mapping[str, Any] | None = None) -> str:
        """Where a version stands with sign-off: ``"not required"`` (it was never held), ``"pending"`` (the
        gate passed it and it waits for a person), ``"approved"`` (it was promoted since) or
        ``"rejected"``. ``manifest``: the version's, where the caller has read it already."""
        manifest = self.manifest(domain, version) if manifest is None else manifest
        if manifest.get("approval") != "required":
            return "not required"
        acts = [m["action"] for m in self.history(domain) if m["version"] == version]
        if "reject" in acts:
            return "rejected"
        return "approved" if "promote" in acts else "pending"

    def history(self, domain: str) -> list[HistoryEntry]:
        """Every readable recorded action of a domain, oldest first (unreadable lines, e.g. one torn by a
        crash mid-write, are skipped; :meth:`check` reports them)."""
        return self._read_history(domain)[0]

    def _history_problems(self, domain: str) -> list[str]:
        return self._read_history(domain)[1]

    def _read_history(self, domain: str) -> tuple[list[HistoryEntry], list[str]]:
        path = self._domain(domain) / "history.jsonl"
        if not path.is_file():
            return [], ([] if not path.exists() else ["history.jsonl is not a readable file"])
        entries: list[HistoryEntry] = []
        problems: list[str] = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "action" not in entry or "version" not in entry:
                    raise ValueError("not an action record")
                entries.append(cast(HistoryEntry, entry))  # what _log wrote (at, action, version, ...)
            except ValueError as exc:
                problems.append(f"history.jsonl line {n} is unreadable ({exc}); skipped")
        return entries, problems

    def versions(self, domain: str | None = None, verify: bool = False) -> list[VersionInfo]:
        """Published versions (all domains, or one), oldest first within a domain. A version whose manifest
        is unreadable is listed with that problem; ``verify`` also checks every file's sha256."""
        domains = (
            [domain] if domain else sorted(p.name for p in self.root.glob("*") if (p / "versions").is_dir())
        )
        out = []
        for d in domains:
            prod = self.production(d)
            for vdir in (self._domain(d) / "versions").glob("*"):
                if not vdir.is_dir() or not _NAME.match(vdir.name):
                    continue
                problems: list[str] = []
                try:
                    man = self.manifest(d, vdir.name)
                except ModelStoreError as exc:
                    man, problems = {}, [str(exc)]
                metrics = man.get("metrics") or {}
                if not isinstance(metrics, dict):
                    problems.append(f"{d}/{vdir.name}: {MANIFEST} metrics is not an object")
                    metrics = {}
                if verify and not problems:
                    problems = self.verify(d, vdir.name)
                out.append(
                    VersionInfo(
                        d,
                        vdir.name,
                        vdir,
                        vdir.name == prod,
                        str(man.get("published_at", "")),
                        dict(metrics),
                        tuple(problems),
                        _decision(man.get("gate")),
                    )
                )
        return sorted(out, key=lambda v: (v.domain, v.published_at, v.version))

    def domains(self) -> list[str]:
        """Domains that have a versions folder."""
        return sorted(p.name for p in self.root.glob("*") if (p / "versions").is_dir())

    def apply_retention(self, domain: str, keep_last: int = 3) -> list[str]:
        """Keep production, the previous production and ``keep_last`` other versions; returns the deleted.

        Versions that never were production (refused candidates) go first, then former production ones;
        oldest first within each.
        """
        versions = [v.version for v in self.versions(domain)]
        current = self.production(domain)
        moves = [m["version"] for m in self.history(domain) if m["action"] in ("promote", "rollback")]
        protected = {current} if current else set()
        earlier = [v for v in moves if v != current]
        if earlier:
            protected.add(earlier[-1])
        others = [v for v in versions if v not in protected]
        ever_production = set(moves)
        order = [v for v in others if v not in ever_production] + [v for v in others if v in ever_production]
        doomed = set(order[: max(len(others) - max(keep_last, 0), 0)])
        removed = []
        for v in versions:
            if v in doomed:
                shutil.rmtree(self.version_dir(domain, v))
                self._log(
                    domain, "delete", v, "retention", f"keep production, previous and {keep_last} others"
                )
                removed.append(v)
        return removed

    # ---- base models ------------------------------------------------------------------------------------
    def base_dir(self, name: str) -> Path:
        """Where the base called ``name`` lives: ``base/<name>`` in the store, or where ``bases.json`` says."""
        _check("base", name)
        inside = self.root / "base" / name
        if inside.is_dir():
            return inside
        registered = self._bases().get(name)
        return Path(registered) if registered else inside

    def register_base(self, name: str, path: Path) -> None:
        """Record that the base ``name`` lives at ``path``; refuses to rebind a name to another folder."""
        _check("base", name)
        path = Path(path).resolve()
        inside = self.root / "base" / name
        bases = self._bases()
        bound = inside.resolve() if inside.is_dir() else Path(bases[name]) if name in bases else None
        if bound is not None and bound != path:
            raise ModelStoreError(f"base name {name!r} already names {bound}, not {path}")
        if bound is None:
            bases[name] = str(path)
            write_json(self.root / "base" / "bases.json", bases)

    def imported_bases(self) -> list[str]:
        """Names of the bases imported into ``base/`` (folders holding a ``config.json``), sorted."""
        found = (self.root / "base").glob("*/config.json")
        return sorted(p.parent.name for p in found if _NAME.match(p.parent.name))

    def _bases(self) -> dict[str, str]:
        path = self.root / "base" / "bases.json"
        try:
            return dict(json.loads(path.read_text())) if path.is_file() else {}
        except ValueError as exc:
            raise ModelStoreError(f"{path} is not valid JSON: {exc}") from None

    def _point(
        self, domain: str, version: str, action: str, actor: str, reason: str, allow_test_models: bool
    ) -> None:
        vdir = self.version_dir(domain, version)
        if not vdir.is_dir():
            raise ModelStoreError(f"{domain}/{version} is not published")
        problems = self.verify(domain, version)
        if problems:
            raise ModelStoreError(f"{domain}/{version} failed its checksums: {', '.join(problems[:5])}")
        if self.manifest(domain, version).get("test_model") and not allow_test_models:
            raise ModelStoreError(
                f"{domain}/{version} is a test model (random-init base or tiny profile); "
                "it becomes production only with CBNANO_ALLOW_TEST_MODELS=1"
            )
        ddir = self._domain(domain)
        # the pointer and history's last move agree even when two promotes race: both happen under the lock
        with self._locked(domain):
            history = ddir / "history.jsonl"
            try:  # a move that cannot be recorded is not made
                with open(history, "ab"):
                    pass
            except OSError as exc:
                raise ModelStoreError(
                    f"{domain}: cannot record the {action} in {history} ({exc.strerror or exc}); "
                    "production was not moved"
                ) from None
            link = ddir / "production"
            before = os.readlink(link) if link.is_symlink() else None
            self._move_pointer(ddir, Path("versions") / version)
            try:
                self._log(domain, action, version, actor, reason)
            except BaseException:  # the record failed after the move: put the pointer back
                if before is None:
                    link.unlink(missing_ok=True)
                else:
                    self._move_pointer(ddir, Path(before))
                raise

    @staticmethod
    def _move_pointer(ddir: Path, target: Path) -> None:
        tmp = ddir / f".production-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, ddir / "production")  # atomic pointer move

    @contextlib.contextmanager
    def _locked(self, domain: str) -> Iterator[None]:
        """Hold the domain's lock file (an exclusive ``flock``: processes, and threads with their own open
        file, wait their turn). Re-entered by the thread that holds it, it does not wait on itself."""
        held: frozenset[str] = getattr(self._local, "held", frozenset())
        if domain in held:
            yield
            return
        path = self._domain(domain) / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            self._local.held = held | {domain}
            try:
                yield
            finally:
                self._local.held = held
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _log(self, domain: str, action: str, version: str, actor: str = "", reason: str = "") -> None:
        path = self._domain(domain) / "history.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry: HistoryEntry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "version": version,
            "actor": actor or default_actor(),
            "reason": reason,
        }
        with self._locked(domain), open(path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            torn = False
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
            # a line torn by a crash mid-write is ended first, so it never swallows this record
            fh.write((b"\n" if torn else b"") + (json.dumps(entry) + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
