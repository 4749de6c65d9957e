"""Arrow schemas shared by every stage (see DESIGN.md, "Document schema")."""

from __future__ import annotations

import pyarrow as pa

#: Columns every document table carries, in this order. Stages append their own columns
#: (quality_score, dup_cluster, contamination, n_tokens) after these.
DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("url", pa.string(), nullable=True),
        pa.field("meta", pa.string(), nullable=True),
    ]
)

#: Every rejected document, whatever the stage: why it was dropped and (unless configured off)
#: its text, so that nothing is lost silently.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=True),
        pa.field("text", pa.large_string(), nullable=True),
        pa.field("meta", pa.string(), nullable=True),
    ]
)

#: What a reader hands to the ingest normaliser: a document candidate, or an error that
#: becomes a rejected row (``error`` is the reject reason, e.g. ``bad_json``).
RAW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=True),
        pa.field("url", pa.string(), nullable=True),
        pa.field("meta", pa.string(), nullable=True),
        pa.field("error", pa.string(), nullable=True),
    ]
)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
