"""The store: one DuckDB file indexing the job shards. All SQL of the project lives in this package."""

from harness.db.store import ReadOnlyError, Store, StoreLocked, ingest_result, open_read_only, rebuild, run_query

__all__ = ["ReadOnlyError", "Store", "StoreLocked", "ingest_result", "open_read_only", "rebuild", "run_query"]
