"""reports/index.html: one static page with the claims table and, per sweep, a section with its results
table, its figures (each with its provenance) and the job images of one job per setting.

It opens from disk (file://) with no server: no JavaScript, no external resources, and every link is
relative to the page, so the folder can be copied or zipped whole. Every string is escaped. Every id on
the page is unique (a figure's id names its sweep), and every heading names its sweep, so that the
contents link to each figure of each sweep.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

CLAIMS_SOURCE = ("The claims are the qualitative statements of the paper (Mathieu, Rainforth, Siddharth, Teh: "
                 "Disentangling Disentanglement in Variational Autoencoders, ICML 2019) and of the Rotated-MNIST "
                 "report, as docs/claims.md lists them with what each tests; harness/report/claims.py checks "
                 "them against this store.")


class FigureLike(Protocol):
    """What the page needs of a figure; `paths == []` means it had no data in the store."""

    name: str
    paths: list[Path]  # PNG, PDF and CSV, in the same folder as the page
    jobs: int
    note: str  # one line on what it shows
    sweep: str  # the sweep it was drawn from
    numerics: str  # numerics version(s) of its jobs
    commits: str  # short hashes of the code that trained its jobs, joined by ", "


class ClaimLike(Protocol):
    claim_id: str
    text: str
    sweep: str
    verdict: str  # a key of VERDICT_CLASS
    evidence: str
    job_ids: list[str]
    seeds: str
    tests: list[str]  # one line per tested difference, with its interval, n and verdict
    n: str  # seeds of the tested settings, e.g. "3" or "1-3"
    method: str  # how the intervals were computed
    note: str  # "1 seed: no noise estimate" where means alone decided
    data: str  # the data and budget the verdict stands on, against the paper's


@dataclass(frozen=True)
class Table:
    """A small table of text: the results of a sweep."""

    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    csv: Path | None = None


@dataclass(frozen=True)
class JobImages:
    """Images of one job (PNGs in or below the page's folder) and what its setting is."""

    job_id: str
    setting: str
    paths: list[Path]
    seed: int | None = None
    skipped: str = ""


@dataclass(frozen=True)
class Sweep:
    """What the page shows of a sweep besides its figures."""

    name: str
    description: str = ""
    results: Table | None = None
    jobs: list[JobImages] = field(default_factory=list)


# verdict -> CSS class that colours it
VERDICT_CLASS = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive", "NOT ENOUGH DATA": "nodata"}

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.results td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.claims th:nth-child(1) { width: 12%; } table.claims th:nth-child(2) { width: 20%; }
table.claims th:nth-child(5) { width: 42%; }
table.claims code { word-break: break-all; }
.verdict { font-weight: bold; white-space: nowrap; }
.pass { background: #d7f5dd; color: #135a23; }
.fail { background: #fbdada; color: #8a1515; }
.nodata { background: #fff1c7; color: #6b5200; }
.inconclusive { background: #e6ecf5; color: #2b4468; }
ul.tests { margin: 0.3em 0 0 1em; padding: 0; font-size: 0.9em; }
.meta, .provenance, .skipped { color: #555; font-size: 0.9em; }
section.sweep { border-top: 2px solid #ddd; margin-top: 2.5em; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.job { margin: 1em 0; }
.job .images { display: flex; gap: 1em; align-items: flex-start; }
.job .images > div { flex: 1; } .job .images > div.tall { flex: 0 0 34%; }
.job img { max-width: 100%; height: auto; display: block; margin-bottom: 0.5em; border: 1px solid #eee; }
code { font-size: 0.9em; }
"""


class _Ids:
    """Unique, valid HTML ids: 'fig-quickstart-sparsity_vs_alpha'; a repeat gets '-2', '-3'."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, *parts: str) -> str:
        base = "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in parts)
        anchor, k = base, 1
        while anchor in self.seen:
            k += 1
            anchor = f"{base}-{k}"
        self.seen.add(anchor)
        return anchor


def write_index(out: Path, figures: Sequence[FigureLike], claims: Sequence[ClaimLike], *, title: str, store: str,
                generated: str, sweeps: Sequence[Sweep] = ()) -> Path:
    """Write `out/index.html` and return its path: the contents, the claims, then a section per sweep (those
    of `sweeps`, then any other that a figure names). The page links each file by its path relative to
    `out`, so with the files inside `out` the folder opens anywhere, from disk or zipped and copied."""
    out.mkdir(parents=True, exist_ok=True)
    ids = _Ids()
    sections = {s.name: s for s in sweeps}
    for f in figures:
        sections.setdefault(f.sweep, Sweep(f.sweep))
    drawn = {name: [f for f in figures if f.paths and f.sweep == name] for name in sections}
    empty = [f for f in figures if not f.paths]
    claims_id = ids("claims")
    empty_id = ids("no-data") if empty else ""
    plans = [_plan(ids, sweep, drawn[name]) for name, sweep in sections.items()]
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
        _contents(claims_id, len(claims), plans, empty_id, len(empty)),
        _claims_table(claims_id, claims),
        *(_section(out, plan, claims, claims_id) for plan in plans),
        _empty_figures(empty_id, empty),
        "</body>",
        "</html>",
        "",
    ])
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


@dataclass(frozen=True)
class _Plan:
    """A sweep's section with the id of each of its parts."""

    sweep: Sweep
    id: str
    results_id: str
    figures: list[tuple[str, FigureLike]]
    jobs_id: str


def _plan(ids: _Ids, sweep: Sweep, figures: list[FigureLike]) -> _Plan:
    return _Plan(sweep, ids("sweep", sweep.name), ids("results", sweep.name) if sweep.results else "",
                 [(ids("fig", sweep.name, f.name), f) for f in figures], ids("jobs", sweep.name) if sweep.jobs else "")


def _contents(claims_id: str, n_claims: int, plans: list[_Plan], empty_id: str, n_empty: int) -> str:
    items = [f'<li><a href="#{claims_id}">claims ({n_claims})</a></li>']
    for plan in plans:
        name = escape(plan.sweep.name)
        inner = ([f'<li><a href="#{plan.results_id}">results: {name}</a></li>'] if plan.results_id else [])
        inner += [f'<li><a href="#{anchor}">{escape(f.name)}: {name}</a></li>' for anchor, f in plan.figures]
        if plan.jobs_id:
            inner.append(f'<li><a href="#{plan.jobs_id}">job images: {name}</a></li>')
        items.append(f'<li><a href="#{plan.id}">sweep {name}</a><ul>{"".join(inner)}</ul></li>')
    if empty_id:
        items.append(f'<li><a href="#{empty_id}">figures without data ({n_empty})</a></li>')
    return "\n".join(['<nav id="contents">', "<h2>Contents</h2>", "<ul>", *items, "</ul>", "</nav>"])


def _claims_table(anchor: str, claims: Sequence[ClaimLike]) -> str:
    head = [f'<h2 id="{anchor}">Claims</h2>', f'<p class="meta">{escape(CLAIMS_SOURCE)}</p>']
    if not claims:
        return "\n".join([*head, "<p>No claims were checked: no sweep in the store belongs to a claim's "
                          "experiment.</p>"])
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
            f"<td>{escape(c.sweep)}" + (f"<br><small>{escape(c.data)}</small>" if getattr(c, "data", "") else "")
            + "</td>"
            f'<td class="verdict {VERDICT_CLASS[c.verdict]}">{escape(c.verdict)}{note}</td>'
            f"<td>{summary}" + (f'<ul class="tests">{tests}</ul>' if tests else "") + "</td>"
            f"<td>{escape(c.n or '-')}<br><small>{escape(c.method)}</small></td>"
            f"<td>{jobs}</td>"
            "</tr>"
        )
    return "\n".join([
        *head,
        '<p class="meta">Each tested difference between settings is a mean over seeds with its 95% interval '
        "(paired t by seed, else Welch t). PASS: every interval lies on the side the claim asserts; FAIL: one "
        "lies wholly on the other side; INCONCLUSIVE: some straddle; NOT ENOUGH DATA: a setting is missing or "
        "has one seed.</p>",
        '<table class="claims">',
        "<thead><tr><th>id</th><th>claim</th><th>sweep (data, budget)</th><th>verdict</th>"
        "<th>evidence and tested differences</th><th>n (seeds)</th><th>jobs</th></tr></thead>",
        "<tbody>", *rows, "</tbody>",
        "</table>",
    ])


def _section(out: Path, plan: _Plan, claims: Sequence[ClaimLike], claims_id: str) -> str:
    sweep = plan.sweep
    name = escape(sweep.name)
    own = [c for c in claims if getattr(c, "sweep", None) == sweep.name]
    counts = {v: sum(1 for c in own if c.verdict == v) for v in VERDICT_CLASS}
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    parts = [f'<section class="sweep" id="{plan.id}">', f"<h2>Sweep {name}</h2>"]
    if sweep.description:
        parts.append(f"<p>{escape(sweep.description)}</p>")
    if own:
        parts.append(f'<p class="meta">Claims on this sweep: {escape(verdicts)} '
                     f'(<a href="#{claims_id}">claims</a>).</p>')
    if sweep.results:
        parts.append(_results(out, plan.results_id, sweep))
    parts += [_figure(out, anchor, f) for anchor, f in plan.figures]
    if sweep.jobs:
        parts.append(_jobs(out, plan.jobs_id, sweep))
    parts.append("</section>")
    return "\n".join(parts)


def _results(out: Path, anchor: str, sweep: Sweep) -> str:
    table = sweep.results
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows]
    link = f' <a href="{_href(out, table.csv)}">CSV</a>' if table.csv else ""
    return "\n".join([
        f'<h3 id="{anchor}">Results: sweep {escape(sweep.name)}</h3>',
        f'<p class="meta">One row per setting. {escape(table.note)}{link}</p>',
        '<table class="results">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>",
    ])


def _figure(out: Path, anchor: str, f: FigureLike) -> str:
    by_suffix = {p.suffix.lower(): p for p in f.paths}
    png = by_suffix.get(".png")
    image = (f'<img src="{_href(out, png)}" alt="{escape(f.name)}, sweep {escape(f.sweep)}: {escape(f.note)}">'
             if png else "<p>No PNG was written for this figure.</p>")
    links = [f'<a href="{_href(out, by_suffix[s])}">{label}</a>' for s, label in ((".pdf", "PDF"), (".csv", "CSV"))
             if s in by_suffix]
    budget = getattr(f, "budget", "")
    provenance = (f"sweep {escape(f.sweep)} · {f.jobs} job{'' if f.jobs == 1 else 's'} · "
                  f"numerics {escape(f.numerics)} · commit{'s' if ',' in f.commits else ''} {escape(f.commits)}"
                  + (f" · budget: {escape(budget)}" if budget else ""))
    return "\n".join([
        f'<figure id="{anchor}">',
        f"<h3>{escape(f.name)}: sweep {escape(f.sweep)}</h3>",
        image,
        f"<figcaption><p>{escape(f.note)}</p>",
        f'<p class="provenance">{provenance}{" · " if links else ""}{" · ".join(links)}</p></figcaption>',
        "</figure>",
    ])


def _jobs(out: Path, anchor: str, sweep: Sweep) -> str:
    blocks = []
    for job in sweep.jobs:
        seed = f", seed {job.seed}" if job.seed is not None else ""
        links = [f'<a href="{_href(out, p)}"><img src="{_href(out, p)}" alt="{escape(p.stem)}"></a>' for p in job.paths]
        # reconstructions and prior samples stacked on the left, the (tall) traversals on the right
        columns = ([f'<div>{"".join(links[:-1])}</div>', f'<div class="tall">{links[-1]}</div>'] if len(links) > 2
                   else [f"<div>{link}</div>" for link in links])
        images = f'<div class="images">{"".join(columns)}</div>'
        skipped = f'<p class="skipped">{escape(job.skipped)}</p>' if job.skipped else ""
        blocks.append(f'<div class="job"><h4>{escape(job.setting)}: job <code>{escape(job.job_id)}</code>{seed}</h4>'
                      f"{images}{skipped}</div>")
    return "\n".join([
        f'<section id="{anchor}">',
        f"<h3>Job images: sweep {escape(sweep.name)}</h3>",
        '<p class="meta">One job per setting (its lowest seed): reconstructions of test inputs, decoded prior '
        "samples and, for images, latent traversals (<code>harness report job</code>).</p>",
        *blocks,
        "</section>",
    ])


def _empty_figures(anchor: str, empty: Sequence[FigureLike]) -> str:
    if not empty:
        return ""
    items = [f"<li><strong>{escape(f.name)}</strong>" + (f" (sweep {escape(f.sweep)})" if f.sweep else "")
             + ": no data in the store yet" + (f" ({escape(f.note)})" if f.note else "") + "</li>" for f in empty]
    return "\n".join([f'<h2 id="{anchor}">Figures without data</h2>', "<ul>", *items, "</ul>"])


def _href(out: Path, path: Path) -> str:
    """A URL relative to the page, percent-encoded, so that the page opens from file:// wherever it lies."""
    relative = Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()
    return escape(quote(relative))
