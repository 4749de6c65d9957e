"""The ingest stage: raw files (WET, WARC, JSONL, Parquet, txt) -> documents and rejected rows.

:mod:`.config` (sources and ingest keys), :mod:`.readers` (one generator per format),
:mod:`.normalize` (pure Arrow functions), :mod:`.stage` (the stage: one worker per input file).
"""
