"""PubChem's scan of staged papers reads the window's partitions through the lake's reader."""

from datetime import UTC, datetime

import pytest

from pipelines.ingestion.pubchem import paper_mentions
from pipelines.lake import partition_dir, write_jsonl

pytestmark = pytest.mark.unit


def test_mentions_come_from_the_window_days_only(tmp_path):
    for day, text in [("2026-11-24", "before: LiCoO2"), ("2026-11-25", "in: LiFePO4 cathodes")]:
        write_jsonl(partition_dir(tmp_path, "arxiv", day, "api-x") / "records.jsonl", [{"text": text}])
    start, end = datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)
    assert paper_mentions(tmp_path, (start, end)) == ["LiFePO4"]
    assert paper_mentions(tmp_path, (start, start)) == []  # an empty window reads nothing
