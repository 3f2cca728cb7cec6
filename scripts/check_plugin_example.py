"""make plugin-example's last step: the example sweep stored its plugin jobs with their identity beside the
built-in ones, and the figures drew both priors. Exits 1 with one line saying what is missing."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import duckdb


def main(store: str, reports: str) -> int:
    with duckdb.connect(store, read_only=True) as con:
        rows = con.execute("""SELECT prior, count(*) FILTER (WHERE status = 'done'),
                                     count(DISTINCT plugins->>'$.prior.distribution')
                              FROM jobs GROUP BY prior ORDER BY prior""").fetchall()
    if rows != [("laplace", 4, 1), ("normal", 4, 0)]:
        print(f"error: {store}: expected 4 done laplace jobs (with the plugin's identity) and 4 normal ones, got "
              f"{rows}", file=sys.stderr)
        return 1
    density = Path(reports) / "clustering_density-laplace_example.csv"
    with density.open() as handle:
        priors = {row["prior_label"] for row in csv.DictReader(handle)}
    if priors != {"laplace", "Gaussian"}:
        print(f"error: {density}: expected panels of both priors, got {sorted(priors)}", file=sys.stderr)
        return 1
    print(f"plugin example: 4 laplace jobs (plugin) and 4 normal jobs stored; {density.name} draws both priors")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
