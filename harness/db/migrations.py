"""Numbered schema migrations, recorded in the database itself (table schema_migrations).

Tables change only through numbered migrations. Views hold no data, so they are recreated after the
migrations every time a writable connection opens: an old store gets today's `runs` view.
"""

from __future__ import annotations

import duckdb

SQL_TYPES = {float: "DOUBLE", int: "BIGINT", bool: "BOOLEAN", str: "VARCHAR"}


def prior_columns() -> dict[str, str]:
    """prior_<option> -> SQL type, for every option of every prior in the registry (a column is NULL for
    the priors that lack the option)."""
    from harness.models.priors import PRIORS

    columns = {}  # the built-ins' options: a plugin's are in `spec`, so that installing one never changes the view
    for entry in PRIORS.builtins.values():
        for option, param in entry.options.items():
            columns[f"prior_{option}"] = SQL_TYPES.get(param.kind if isinstance(param.kind, type) else str, "VARCHAR")
    return dict(sorted(columns.items()))


def _runs_view() -> str:
    """One row per job with its prior's options as typed columns (from the prior registry's schemas) and
    its test-split values as columns (those the metric registry names), so an old store sees the columns
    of priors and metrics added since (NULL where a job lacks them; `harness eval` adds metrics)."""
    from harness.metrics.registry import runs_columns

    splits = "('test', 'grid')"  # the metrics that read the whole factor grid store it as split 'grid'
    columns = ",\n        ".join(f"max(m.value) FILTER (WHERE m.split IN {splits} AND m.name = '{name}') AS {name}"
                                  for name in runs_columns())
    options = ",\n        ".join(f"json_extract(j.spec, '$.prior.{column[len('prior_'):]}')::{kind} AS {column}"
                                  for column, kind in prior_columns().items())
    return f"""
    CREATE OR REPLACE VIEW runs AS
    SELECT j.job_id, j.sweep, j.status, j.numerics, j.dataset, j.arch, j.prior, j.gamma, j.df, j.alpha, j.beta,
        j.latent_dim, j.epochs, j.batch_size, j.lr, j.seed, j.device, j.pack_size, j.wall_seconds,
        j.peak_memory_bytes, j.plugins,
        {options},
        {columns}
    FROM jobs j LEFT JOIN metrics m USING (job_id)
    GROUP BY ALL
    """


MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE sweeps (
            name VARCHAR PRIMARY KEY, path VARCHAR, description VARCHAR, toml VARCHAR, updated TIMESTAMP)""",
        """CREATE TABLE sweep_jobs (sweep VARCHAR, job_id VARCHAR, PRIMARY KEY (sweep, job_id))""",
        """CREATE TABLE jobs (
            job_id VARCHAR PRIMARY KEY, sweep VARCHAR, spec JSON, dataset VARCHAR, arch VARCHAR, prior VARCHAR,
            gamma DOUBLE, df DOUBLE, alpha DOUBLE, beta DOUBLE, latent_dim INTEGER, epochs INTEGER,
            batch_size INTEGER, lr DOUBLE, seed BIGINT, status VARCHAR, error VARCHAR, failed_epoch INTEGER,
            device VARCHAR, host VARCHAR, pack_id VARCHAR, pack_size INTEGER, started TIMESTAMP,
            finished TIMESTAMP, wall_seconds DOUBLE, peak_memory_bytes BIGINT, git_commit VARCHAR,
            versions JSON, shard VARCHAR)""",
        """CREATE TABLE epochs (
            job_id VARCHAR, epoch INTEGER, loss DOUBLE, recon DOUBLE, kl DOUBLE, reg DOUBLE, seconds DOUBLE,
            samples_per_second DOUBLE, PRIMARY KEY (job_id, epoch))""",
        """CREATE TABLE metrics (
            job_id VARCHAR, split VARCHAR, name VARCHAR, value DOUBLE, PRIMARY KEY (job_id, split, name))""",
        """CREATE TABLE latent_stats (
            job_id VARCHAR, split VARCHAR, class_index INTEGER, class_name VARCHAR, dim INTEGER,
            mean_abs_loc DOUBLE, PRIMARY KEY (job_id, split, class_index, dim))""",
        """CREATE TABLE artifacts (job_id VARCHAR, kind VARCHAR, path VARCHAR, PRIMARY KEY (job_id, kind))""",
    ]),
    # rows from before this migration were computed under numerics version 1 (harness.numerics)
    (2, "numerics version of each job", [
        "ALTER TABLE jobs ADD COLUMN numerics INTEGER DEFAULT 1",
    ]),
    # metrics come from a registry, each with a version; per-dimension tables of any metric share one
    # long table, and the class magnitudes that had their own table become its rows
    (3, "metric versions and per-dimension rows of every metric", [
        "ALTER TABLE metrics ADD COLUMN metric VARCHAR",
        "ALTER TABLE metrics ADD COLUMN version INTEGER",
        """CREATE TABLE dim_stats (
            job_id VARCHAR, split VARCHAR, metric VARCHAR, stat VARCHAR, dim INTEGER, key VARCHAR,
            key_index INTEGER, value DOUBLE, PRIMARY KEY (job_id, split, metric, stat, dim, key))""",
        """INSERT INTO dim_stats SELECT job_id, split, 'class_magnitudes', 'mean_abs_loc', dim, class_name,
            class_index, mean_abs_loc FROM latent_stats""",
        "DROP TABLE latent_stats",
    ]),
    # values at 2-D points: a density on a grid (aggregate posterior), an embedding (t-SNE) per example
    (4, "2-D points of metrics", [
        """CREATE TABLE points (
            job_id VARCHAR, split VARCHAR, metric VARCHAR, idx INTEGER, x DOUBLE, y DOUBLE, value DOUBLE,
            label INTEGER, factor INTEGER, PRIMARY KEY (job_id, split, metric, idx))""",
    ]),
    # pytest-benchmark cases of `harness bench run`, compared only on the same machine fingerprint
    (5, "benchmark runs", [
        """CREATE TABLE benchmarks (
            run_id VARCHAR, suite VARCHAR, case_name VARCHAR, params JSON, mean DOUBLE, stddev DOUBLE,
            median DOUBLE, min DOUBLE, max DOUBLE, rounds INTEGER, git_commit VARCHAR, numerics INTEGER,
            fingerprint VARCHAR, machine JSON, created TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (run_id, suite, case_name))""",
    ]),
    # cluster tasks a driver submitted (one per pack), so that a driver run again re-attaches to those still
    # queued or running instead of submitting their jobs twice; state: submitted (Slurm has it), ended (its
    # shards are ingested or its jobs marked failed) or cancelled (`harness sweep cancel`)
    (6, "cluster submissions", [
        """CREATE TABLE submissions (
            task_id VARCHAR PRIMARY KEY, sweep VARCHAR, cluster VARCHAR, pack_id VARCHAR, job_ids VARCHAR[],
            submitted TIMESTAMP DEFAULT current_timestamp, state VARCHAR, ended TIMESTAMP, note VARCHAR)""",
    ]),
    # how each pack ran (torch.compile or eager, cuDNN deterministic or autotuned): not part of the spec
    (7, "run options of jobs", [
        "ALTER TABLE jobs ADD COLUMN run_options JSON",
    ]),
    # what a benchmark case measured beside its time, e.g. a ratio of two things timed side by side
    (8, "benchmark extra info", [
        "ALTER TABLE benchmarks ADD COLUMN extra JSON",
    ]),
    # the sha256 of each checkpoint file as its job wrote it: loads verify it (NULL for older jobs)
    (9, "checkpoint checksums", [
        "ALTER TABLE artifacts ADD COLUMN sha256 VARCHAR",
    ]),
    # the plugins a job used (field -> group, name, distribution, version, source sha256), NULL for built-ins;
    # and the plugin that computed a metric's values (harness eval), NULL for built-in metrics
    (10, "plugin identities", [
        "ALTER TABLE jobs ADD COLUMN plugins JSON",
        "ALTER TABLE metrics ADD COLUMN plugin JSON",
    ]),
]


def _latent_stats_view() -> str:
    """The class magnitudes under the table name and columns they had before migration 3."""
    return """
    CREATE OR REPLACE VIEW latent_stats AS
    SELECT job_id, split, key_index AS class_index, key AS class_name, dim, value AS mean_abs_loc
    FROM dim_stats WHERE metric = 'class_magnitudes' AND stat = 'mean_abs_loc'
    """


VIEWS = (_runs_view, _latent_stats_view)


def _views_digest() -> str:
    """A hash of today's view definitions: they change with the registries, not only with migrations."""
    import hashlib

    return hashlib.sha256("\n".join(view() for view in VIEWS).encode()).hexdigest()[:16]


def current(con) -> bool:
    """Whether every migration is applied and the views are today's (works on a read-only connection)."""
    try:
        done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
        views = con.execute("SELECT digest FROM schema_views").fetchall()
    except duckdb.CatalogException:  # a table missing: a store older than this scheme, or not one at all
        return False
    return all(version in done for version, _, _ in MIGRATIONS) and views == [(_views_digest(),)]


def rollback(con) -> None:
    """Undo the open transaction; where DuckDB already ended it (a failed COMMIT, e.g. on a full disk), there
    is nothing to undo, and the error that ended it is the one to report, not "no transaction is active"."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def migrate(con) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction; returns those applied."""
    con.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name VARCHAR, applied TIMESTAMP DEFAULT current_timestamp)""")
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            rollback(con)
            raise
        applied.append(version)
    for view in VIEWS:
        con.execute(view())
    con.execute("CREATE OR REPLACE TABLE schema_views AS SELECT ? AS digest", [_views_digest()])
    return applied
