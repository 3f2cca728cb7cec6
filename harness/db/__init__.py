"""The store: one DuckDB file indexing the job shards. All SQL of the project lives in this package.

store.py holds the paths and connections; each concern is a module of functions over a Store: claims,
ingest (and rebuild), sweeps, jobs, submissions, benchmarks, and queries (the reports' named queries)."""

from harness.db.ingest import ingest_result, rebuild
from harness.db.store import ReadOnlyError, Store, StoreLocked, open_read_only, run_query

__all__ = ["ReadOnlyError", "Store", "StoreLocked", "ingest_result", "open_read_only", "rebuild", "run_query"]
