"""reports/index.html: the page is checked as text, then opened from disk in a real headless Chromium,
where every image must have loaded. CI installs the browser (scripts/install-browser.sh), so there the
browser test must run; on a developer's machine without it, it skips."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from harness.report.html import write_index  # noqa: E402

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


CLAIMS = [
    Claim("sparsity-alpha", "Sparsity grows with alpha", "PASS", "hoyer 0.212 -> 0.343",
          ["942a920b032a6870", "e4130d80"],
          tests=["h(100) - h(0) = +0.131 [+0.08, +0.18] (paired t, n 3/3) > 0: PASS"]),
    Claim("gamma-helps", "gamma = 0.8 beats gamma = 0", "FAIL", "0.20 < 0.21", ["32c76264209947fb"]),
    Claim("noise", "The gap is larger than the noise", "INCONCLUSIVE", "0.21 against 0.22", ["32c76264209947fb"]),
    Claim("seeds", "The gap holds over 3 seeds", "NOT ENOUGH DATA", "1 seed of 3", [], "needs 3, has 1"),
]


def _figure(out: Path, name: str, rng: np.random.Generator) -> Fig:
    """A real figure: PNG and PDF from matplotlib, and the CSV of what it plotted."""
    x = np.arange(10)
    y = rng.normal(size=10).cumsum()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(x, y)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.savefig(paths[0], dpi=50)
    fig.savefig(paths[1])
    plt.close(fig)
    paths[2].write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y, strict=True)))
    return Fig(name, paths, jobs=6, note=f"{name} against alpha")


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
