"""reports/index.html: the page is checked as text, then opened from disk in a real headless Chromium,
where every image must have loaded and every contents link must land on its own part of the page. CI
installs the browser (scripts/install-browser.sh), so there the browser test must run; on a developer's
machine without it, it skips."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from harness.report.html import JobImages, Sweep, Table, write_index  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass(frozen=True)
class Fig:
    name: str
    paths: list[Path]
    jobs: int
    note: str
    sweep: str = "quickstart"
    numerics: str = "2"
    commits: str = "abc1234"


@dataclass(frozen=True)
class Claim:
    claim_id: str
    text: str
    verdict: str
    evidence: str
    job_ids: list[str] = field(default_factory=list)
    seeds: str = "1"
    tests: list[str] = field(default_factory=list)
    n: str = "3"
    method: str = "paired t"
    note: str = ""
    sweep: str = "quickstart"


CLAIMS = [
    Claim("sparsity-alpha", "Sparsity grows with alpha", "PASS", "hoyer 0.212 -> 0.343",
          ["942a920b032a6870", "e4130d80"],
          tests=["h(100) - h(0) = +0.131 [+0.08, +0.18] (paired t, n 3/3) > 0: PASS"]),
    Claim("gamma-helps", "gamma = 0.8 beats gamma = 0", "FAIL", "0.20 < 0.21", ["32c76264209947fb"]),
    Claim("noise", "The gap is larger than the noise", "INCONCLUSIVE", "0.21 against 0.22", ["32c76264209947fb"]),
    Claim("seeds", "The gap holds over 3 seeds", "NOT ENOUGH DATA", "1 seed of 3", [], "needs 3, has 1"),
]


def _png(path: Path, rng: np.random.Generator) -> Path:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(rng.normal(size=10).cumsum())
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def _figure(out: Path, name: str, rng: np.random.Generator, sweep: str = "quickstart") -> Fig:
    """A real figure: PNG and PDF from matplotlib, and the CSV of what it plotted."""
    x = np.arange(10)
    y = rng.normal(size=10).cumsum()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(x, y)
    stem = name if sweep == "quickstart" else f"{name}-{sweep}"
    paths = [out / f"{stem}.png", out / f"{stem}.pdf", out / f"{stem}.csv"]
    fig.savefig(paths[0], dpi=50)
    fig.savefig(paths[1])
    plt.close(fig)
    paths[2].write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y, strict=True)))
    return Fig(name, paths, jobs=6, note=f"{name} against alpha", sweep=sweep)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """index.html with two drawn figures, one without data, and four claims (one of each verdict)."""
    rng = np.random.default_rng(0)
    out = tmp_path / "reports dir"  # a space, so that the links must be percent-encoded
    out.mkdir()
    figures = [_figure(out, "sparsity_vs_alpha", rng), _figure(out, "elbo_vs_alpha", rng),
               Fig("disentanglement", [], jobs=0, note="MIG against beta")]
    return write_index(out, figures, CLAIMS, title="Quickstart report", store="runs/harness.duckdb",
                       generated="2026-11-01 12:00 UTC")


SWEEPS = ("quickstart", "rotated_mnist_demo", "clustering_demo")


@pytest.fixture
def several(tmp_path: Path) -> Path:
    """index.html of a store with three sweeps that share figure names (timings in each, sparsity_vs_alpha in
    two), each with a results table and job images, and claims on two of them."""
    rng = np.random.default_rng(1)
    out = tmp_path / "reports"
    out.mkdir()
    figures = [_figure(out, name, rng, sweep) for sweep in SWEEPS for name in ("sparsity_vs_alpha", "timings")
               if not (sweep == "clustering_demo" and name == "sparsity_vs_alpha")]
    sections = []
    for sweep in SWEEPS:
        csv = out / f"results-{sweep}.csv"
        csv.write_text("alpha,hoyer\n0,0.2\n")
        jobs = [JobImages(f"{sweep[:4]}{k:012d}", f"alpha {k}", [_png(out / f"{sweep}{k}_{kind}.png", rng)
                                                                 for kind in ("reconstructions", "traversals")], 1)
                for k in range(2)]
        sections.append(Sweep(sweep, f"the {sweep} sweep", Table(["alpha", "n (seeds)", "Hoyer sparsity"],
                                                               [["0", "1", "0.200"], ["100", "1", "0.300"]],
                                                               "one seed", csv), jobs))
    claims = [replace(c, sweep=sweep) for sweep in SWEEPS[:2] for c in CLAIMS]
    return write_index(out, figures, claims, title="Three sweeps", store="runs/h.duckdb", generated="now",
                       sweeps=sections)


class _Page(HTMLParser):
    """The ids of a page, the heading text inside each element with an id, and its contents links."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: list[str] = []
        self.headings: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []  # (href, text) inside <nav>
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of open elements
        self._heading: str | None = None
        self._link: str | None = None
        self._nav = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag not in ("img", "br", "meta"):
            self._open.append((tag, attrs.get("id")))
        self._nav |= tag == "nav"
        if tag == "a" and self._nav and attrs.get("href", "").startswith("#"):
            self._link = attrs["href"][1:]
            self.links.append((self._link, ""))
        if tag in ("h2", "h3", "h4"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("h2", "h3", "h4") and self._heading is not None:
            owner = next((i for t, i in reversed(self._open) if i), None)
            if owner and owner not in self.headings:
                self.headings[owner] = self._heading
            self._heading = None
        if tag == "a":
            self._link = None
        self._nav &= tag != "nav"
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._link is not None:
            href, text = self.links[-1]
            self.links[-1] = (href, text + data)


def _names(label: str, heading: str) -> bool:
    """Does a heading name what a contents link says? 'timings: quickstart' -> 'timings: sweep quickstart',
    'sweep quickstart' -> 'Sweep quickstart', 'claims (8)' -> 'Claims'."""
    words = label.split(" (")[0].lower().replace("sweep ", "").split(": ")
    return all(w in heading.lower() for w in words)


def page_problems(text: str) -> list[str]:
    """What is wrong with a page's anchors: an id used twice, a contents link to no id, a link whose target's
    heading does not name what the link says (a figure and its sweep, 'timings: quickstart')."""
    page = _Page(text)
    found = [f"id {i!r} appears {page.ids.count(i)} times" for i in sorted(set(page.ids)) if page.ids.count(i) > 1]
    for href, label in page.links:
        if href not in page.ids:
            found.append(f"link {label!r} to #{href}: no such id")
            continue
        heading = page.headings.get(href, "")
        if not _names(label, heading):
            found.append(f"link {label!r} lands on {heading!r}")
    return found


def test_a_page_of_several_sweeps_has_unique_ids_and_contents_that_land_on_their_own_part(several: Path) -> None:
    text = several.read_text()
    assert page_problems(text) == []
    page = _Page(text)
    figure_links = [label for href, label in page.links if href.startswith("fig-")]
    assert sorted(figure_links) == sorted(f"{name}: {sweep}" for sweep in SWEEPS for name in
                                          ("sparsity_vs_alpha", "timings")
                                          if not (sweep == "clustering_demo" and name == "sparsity_vs_alpha"))
    for sweep in SWEEPS:  # a section per sweep, its heading naming it, with its results table and job images
        assert page.headings[f"sweep-{sweep}"] == f"Sweep {sweep}"
        assert page.headings[f"results-{sweep}"] == f"Results: sweep {sweep}"
        assert page.headings[f"jobs-{sweep}"] == f"Job images: sweep {sweep}"
    assert text.count('<table class="results">') == 3 and text.count("<img ") == 5 + 3 * 2 * 2
    assert "docs/claims.md" in text and "SPEC" not in text


@pytest.mark.parametrize("broken, culprit", [
    ('<nav><a href="#a">x: s</a></nav><div id="a"><h3>x: sweep s</h3></div><div id="a"></div>', "appears 2 times"),
    ('<nav><a href="#b">x: s</a></nav><div id="a"><h3>x: sweep s</h3></div>', "no such id"),
    ('<nav><a href="#a">timings: s2</a></nav><div id="a"><h3>timings: sweep s1</h3></div>', "lands on"),
])
def test_the_anchor_check_finds_a_broken_page(broken: str, culprit: str) -> None:
    found = page_problems(broken)
    assert len(found) == 1 and culprit in found[0], found


def test_page_is_static_and_relative(report: Path) -> None:
    page = report.read_text()
    assert page.count("<img ") == 2
    assert 'src="sparsity_vs_alpha.png"' in page and 'href="elbo_vs_alpha.pdf"' in page
    assert str(report.parent) not in page  # no absolute paths: the folder can move
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "no data in the store yet" in page and "disentanglement" in page
    assert "runs/harness.duckdb" in page and "2026-11-01 12:00 UTC" in page
    assert "sweep quickstart · 6 jobs · numerics 2 · commit abc1234" in page


def test_every_string_is_escaped(tmp_path: Path) -> None:
    claim = Claim("<b>id</b>", "<script>alert(1)</script>", "PASS", "a < b & c", ['"><img src=x>'])
    fig = Fig("<i>fig</i>", [], jobs=0, note='"quoted"')
    page = write_index(tmp_path, [fig], [claim], title="<t>", store="<s>", generated="<g>").read_text()
    for raw in ("<b>", "<script>", "<i>", "<t>", "<s>", "<g>", "a < b", '"><img'):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a &lt; b &amp; c" in page


def test_unknown_verdict_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MAYBE"):
        write_index(tmp_path, [], [Claim("x", "x", "MAYBE", "")], title="t", store="s", generated="g")


# --- in a real browser ------------------------------------------------------------------------------


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} in CI: .ci/run must run scripts/install-browser.sh and install the dev extras")
    pytest.skip(f"{reason} (bash scripts/install-browser.sh; pip install selenium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Debian's Chromium driven by its own ChromeDriver; Selenium Manager is never asked to download one."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            _missing(f"{path} not found")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # as root, with no network: without the background-networking flags Chromium keeps dialling out
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def broken_images(driver, page: Path) -> tuple[int, list[str]]:
    """Open `page` from disk and return how many <img> it has and the src of each that did not load.
    driver.get returns after the load event, by which time every image has loaded or failed."""
    driver.get(page.as_uri())
    images = driver.execute_script("return Array.from(document.images).map("
                                   "i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    return len(images), [src for src, loaded in images if not loaded]


def test_index_opens_in_browser(browser, report: Path) -> None:
    from selenium.webdriver.common.by import By

    count, broken = broken_images(browser, report)
    assert count == 2 and broken == []
    assert browser.title == "Quickstart report"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.claims tbody tr")
    assert len(rows) == len(CLAIMS)
    verdicts = [r.find_element(By.CSS_SELECTOR, "td.verdict") for r in rows]
    assert [v.text for v in verdicts] == ["PASS", "FAIL", "INCONCLUSIVE", "NOT ENOUGH DATA"]
    colours = {v.value_of_css_property("background-color") for v in verdicts}
    assert len(colours) == 4  # each verdict has its own colour
    assert "+0.131 [+0.08, +0.18] (paired t, n 3/3)" in rows[0].text  # the tested difference with its interval
    assert "no data in the store yet" in browser.find_element(By.ID, "no-data").find_element(By.XPATH, "..").text


def test_missing_image_is_detected(browser, report: Path) -> None:
    (report.parent / "elbo_vs_alpha.png").unlink()
    count, broken = broken_images(browser, report)
    assert count == 2 and broken == ["elbo_vs_alpha.png"]


def test_every_contents_link_lands_on_its_own_part_in_the_browser(browser, several: Path) -> None:
    from selenium.webdriver.common.by import By

    count, broken = broken_images(browser, several)
    assert count == 5 + 3 * 2 * 2 and broken == []
    ids = browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
    assert len(ids) == len(set(ids))
    links = browser.find_elements(By.CSS_SELECTOR, "nav#contents a")
    hrefs = [(a.get_attribute("href").split("#", 1)[1], a.text) for a in links]
    assert len(hrefs) == 1 + 3 * 3 + 5  # claims; per sweep its section, results and job images; the figures
    for href, label in hrefs:
        browser.find_element(By.CSS_SELECTOR, f'nav#contents a[href="#{href}"]').click()
        landed = browser.execute_script(
            "const t = document.querySelector(':target'); const r = t.getBoundingClientRect();"
            "const h = t.matches('h2, h3') ? t : t.querySelector('h2, h3');"
            "return [t.id, h.textContent, r.top, window.innerHeight]")
        target, heading, top, height = landed
        assert target == href, label
        assert _names(label, heading), (label, heading)
        assert -2 <= top < height, (label, top)  # scrolled into view
