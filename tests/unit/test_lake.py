import pytest

from pipelines.lake import partition_dir, read_jsonl, sha256_file, write_atomic, write_json, write_jsonl

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


def test_staged_records_and_run_summaries_read_the_layout(tmp_path):
    import os
    from datetime import date

    from pipelines.lake import run_summaries, staged_records

    for source, day, run, doc in [
        ("arxiv", "2026-11-25", "api-a", "p1"),
        ("arxiv", "2026-11-26", "api-b", "p2"),
        ("pubchem", "2026-11-26", "cids-c", "c1"),
    ]:
        folder = partition_dir(tmp_path, source, day, run)
        write_jsonl(folder / "records.jsonl", [{"doc_id": doc}])
        write_json(folder / "summary.json", {"new": 1})
    write_jsonl(tmp_path / "datasets" / "catalysis" / "2026-11" / "records.jsonl", [{"doc_id": "not a run"}])
    os.utime(tmp_path / "arxiv/2026-11-25/api-a/summary.json", (2e9, 2e9))  # the newest write

    every = staged_records(tmp_path)
    assert [(f.source, f.day, f.run) for f in every] == [
        ("arxiv", "2026-11-25", "api-a"),
        ("arxiv", "2026-11-26", "api-b"),
        ("pubchem", "2026-11-26", "cids-c"),
    ]
    assert [r["doc_id"] for r in every[1].records()] == ["p2"]
    window = staged_records(tmp_path, ["arxiv"], date(2026, 11, 26), date(2026, 11, 26))
    assert [f.run for f in window] == ["api-b"]
    assert [f.run for f in staged_records(tmp_path, ["arxiv"], last_day=date(2026, 11, 25))] == ["api-a"]
    newest = run_summaries(tmp_path)
    assert newest[0].run == "api-a" and len(newest) == 3
    assert len(run_summaries(tmp_path, limit=2)) == 2
