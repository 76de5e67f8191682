"""The fixture lake both the dataset and the retraining tests start from (tests/ is on sys.path)."""


def stage_fixtures(settings, cids=()):
    """Ingest (no embedding) the fixture window's papers and four named compounds (and ``cids``), as ingestion
    leaves them in the lake; returns the data dir."""
    from datetime import UTC, date, datetime

    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.ingestion.pubchem import ingest_pubchem

    ingest_arxiv(
        settings,
        datetime(2026, 11, 25, tzinfo=UTC),
        datetime(2026, 11, 27, tzinfo=UTC),
        ["cond-mat.mtrl-sci", "physics.chem-ph"],
        dry_run=True,
    )
    ingest_pubchem(
        settings,
        names=["water", "TiO2", "cerium oxide", "ethylene carbonate"],
        cids=list(cids),
        dry_run=True,
        day=date(2026, 11, 26),
    )
    return settings.data_dir
