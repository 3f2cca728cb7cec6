"""reports/index.html: one static page with the claims table and every figure, each with its provenance.

It opens from disk (file://) with no server: no JavaScript, no external resources, and every link is
relative to the page, so the folder can be copied or zipped whole. Every string is escaped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Protocol
from urllib.parse import quote


class FigureLike(Protocol):
    """What the page needs of a figure; `paths == []` means it had no data in the store."""

    name: str
    paths: list[Path]  # PNG, PDF and CSV, in the same folder as the page
    jobs: int
    note: str  # one line on what it shows
    sweep: str  # the sweep(s) it pooled
    numerics: str  # numerics version(s) of its jobs
    commits: str  # short hashes of the code that trained its jobs, joined by ", "


class ClaimLike(Protocol):
    claim_id: str
    text: str
    verdict: str  # a key of VERDICT_CLASS
    evidence: str
    job_ids: list[str]
    seeds: str
    tests: list[str]  # one line per tested difference, with its interval, n and verdict
    n: str  # seeds of the tested settings, e.g. "3" or "1-3"
    method: str  # how the intervals were computed
    note: str  # "1 seed: no noise estimate" where means alone decided


# verdict -> CSS class that colours it
VERDICT_CLASS = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive", "NOT ENOUGH DATA": "nodata"}

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.verdict { font-weight: bold; white-space: nowrap; }
.pass { background: #d7f5dd; color: #135a23; }
.fail { background: #fbdada; color: #8a1515; }
.nodata { background: #fff1c7; color: #6b5200; }
.inconclusive { background: #e6ecf5; color: #2b4468; }
ul.tests { margin: 0.3em 0 0 1em; padding: 0; font-size: 0.9em; }
.meta, .provenance { color: #555; font-size: 0.9em; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { font-size: 0.9em; }
"""


def write_index(out: Path, figures: Sequence[FigureLike], claims: Sequence[ClaimLike], *, title: str, store: str,
                generated: str) -> Path:
    """Write `out/index.html` and return its path. The page links each figure's files by paths relative
    to `out`, so with the figures inside `out` the folder opens anywhere, from disk or zipped and copied."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [f for f in figures if f.paths]
    empty = [f for f in figures if not f.paths]
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Store <code>{escape(store)}</code>, generated {escape(generated)}.</p>',
        _claims_table(claims),
        _contents(drawn, empty),
        *(_figure(out, f) for f in drawn),
        _empty_figures(empty),
        "</body>",
        "</html>",
        "",
    ])
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _claims_table(claims: Sequence[ClaimLike]) -> str:
    if not claims:
        return '<h2 id="claims">Claims</h2>\n<p>No claims were checked.</p>'
    rows = []
    for c in claims:
        if c.verdict not in VERDICT_CLASS:
            raise ValueError(f"claim {c.claim_id}: verdict {c.verdict!r} is not one of {', '.join(VERDICT_CLASS)}")
        ids = "".join(f"<li><code>{escape(j)}</code></li>" for j in c.job_ids)
        jobs = (f"<details><summary>{len(c.job_ids)}</summary><ul>{ids}</ul></details>" if c.job_ids else "0")
        tests = "".join(f"<li>{escape(t)}</li>" for t in c.tests)
        summary = escape(c.evidence.split("; ")[0]) if c.tests else escape(c.evidence)
        note = f"<br><small>{escape(c.note)}</small>" if c.note else ""
        rows.append(
            "<tr>"
            f"<td><code>{escape(c.claim_id)}</code></td>"
            f"<td>{escape(c.text)}</td>"
            f'<td class="verdict {VERDICT_CLASS[c.verdict]}">{escape(c.verdict)}{note}</td>'
            f"<td>{summary}" + (f'<ul class="tests">{tests}</ul>' if tests else "") + "</td>"
            f"<td>{escape(c.n or '-')}<br><small>{escape(c.method)}</small></td>"
            f"<td>{jobs}</td>"
            "</tr>"
        )
    return "\n".join([
        '<h2 id="claims">Claims</h2>',
        '<p class="meta">Each tested difference between settings is a mean over seeds with its 95% interval '
        "(paired t by seed, else Welch t). PASS: every interval lies on the side the claim asserts; FAIL: one "
        "lies wholly on the other side; INCONCLUSIVE: some straddle; NOT ENOUGH DATA: a setting is missing or "
        "has one seed.</p>",
        '<table class="claims">',
        "<thead><tr><th>id</th><th>claim</th><th>verdict</th><th>evidence and tested differences</th>"
        "<th>n (seeds)</th><th>jobs</th></tr></thead>",
        "<tbody>", *rows, "</tbody>",
        "</table>",
    ])


def _contents(drawn: Sequence[FigureLike], empty: Sequence[FigureLike]) -> str:
    items = [f'<li><a href="#{_anchor(f)}">{escape(f.name)}</a></li>' for f in drawn]
    if empty:
        items.append(f'<li><a href="#no-data">without data ({len(empty)})</a></li>')
    return "\n".join(['<h2 id="figures">Figures</h2>', "<ul>", *items, "</ul>"])


def _figure(out: Path, f: FigureLike) -> str:
    by_suffix = {p.suffix.lower(): p for p in f.paths}
    png = by_suffix.get(".png")
    image = (f'<img src="{_href(out, png)}" alt="{escape(f.name)}: {escape(f.note)}">' if png
             else "<p>No PNG was written for this figure.</p>")
    links = [f'<a href="{_href(out, by_suffix[s])}">{label}</a>' for s, label in ((".pdf", "PDF"), (".csv", "CSV"))
             if s in by_suffix]
    provenance = (f"sweep {escape(f.sweep)} · {f.jobs} job{'' if f.jobs == 1 else 's'} · "
                  f"numerics {escape(f.numerics)} · commit{'s' if ',' in f.commits else ''} {escape(f.commits)}")
    return "\n".join([
        f'<figure id="{_anchor(f)}">',
        f"<h3>{escape(f.name)}</h3>",
        image,
        f"<figcaption><p>{escape(f.note)}</p>",
        f'<p class="provenance">{provenance}{" · " if links else ""}{" · ".join(links)}</p></figcaption>',
        "</figure>",
    ])


def _empty_figures(empty: Sequence[FigureLike]) -> str:
    if not empty:
        return ""
    items = [f"<li><strong>{escape(f.name)}</strong>: no data in the store yet"
             + (f" ({escape(f.note)})" if f.note else "") + "</li>" for f in empty]
    return "\n".join(['<h2 id="no-data">Figures without data</h2>', "<ul>", *items, "</ul>"])


def _anchor(f: FigureLike) -> str:
    return escape("fig-" + f.name)


def _href(out: Path, path: Path) -> str:
    """A URL relative to the page, percent-encoded, so that the page opens from file:// wherever it lies."""
    relative = Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()
    return escape(quote(relative))
