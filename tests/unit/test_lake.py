import pytest

from pipelines.lake import read_jsonl, sha256_file, write_atomic, write_jsonl

pytestmark = pytest.mark.unit


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.json"
    digest = write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello" and digest == sha256_file(target)
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "records.jsonl"
    write_jsonl(target, [{"a": 1}])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("pipelines.lake.os.replace", boom)
    with pytest.raises(OSError):
        write_jsonl(target, [{"a": 2}])
    assert list(read_jsonl(target)) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_jsonl_roundtrip_and_empty(tmp_path):
    n, _ = write_jsonl(tmp_path / "x.jsonl", [{"é": "ü"}, {"b": [1, 2]}])
    assert n == 2 and list(read_jsonl(tmp_path / "x.jsonl")) == [{"é": "ü"}, {"b": [1, 2]}]
    assert write_jsonl(tmp_path / "e.jsonl", [])[0] == 0 and list(read_jsonl(tmp_path / "e.jsonl")) == []


def test_run_lock_is_exclusive_names_the_holder_and_is_released(tmp_path):
    import os

    from pipelines.lake import RunBusy, run_lock

    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(RunBusy, match=f"another run is working in {run} \\(pid {os.getpid()}"):
            with run_lock(run, wait_s=0.3):
                pass
    with run_lock(run, wait_s=0.3):  # released
        pass
