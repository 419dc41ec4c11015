"""End to end in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium; nothing is downloaded): the dashboard on a seeded store, the Search page's
Pareto chart and numbers checked against the store, a click through to a trial, screenshots
kept as test artifacts (``runs/test-artifacts/ui``, or ``$WINNOW_TEST_ARTIFACTS``).
``WINNOW_UPDATE_SCREENSHOT=1`` also refreshes the README's ``docs/img/search-page.png``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from winnow.service.engine import readout
from winnow.ui import nav

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--window-size=1400,1800",
    "--hide-scrollbars",
]
WAIT = 60  # seconds for the first page: Streamlit's server starts its session


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = WAIT):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit re-renders while a condition reads the page: an element found a moment ago
    # can be replaced before its text is read; that poll counts as not yet, not as a failure
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(condition)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _shown_metrics(driver) -> dict[str, float]:
    shown = {}
    for metric in _css(driver, '[data-testid="stMetric"]'):
        label = metric.find_element("css selector", '[data-testid="stMetricLabel"]').text
        value = metric.find_element("css selector", '[data-testid="stMetricValue"]').text
        shown[label.strip()] = nav.parse(value)
    return shown


# The opaque markers (the front) of the page's first Plotly chart, the Pareto front, and for
# each the squared distance to its nearest other marker; one script, not a call per marker.
FRONT_POINTS = """
const points = [...document.querySelectorAll('.js-plotly-plot')[0]
    .querySelectorAll('.scatterlayer path.point')];
const centres = points.map(p => { const r = p.getBoundingClientRect();
    return [r.x + r.width / 2, r.y + r.height / 2]; });
return points.map((p, i) => [p, Number(getComputedStyle(p).opacity),
    Math.min(...centres.filter((_, j) => j !== i)
        .map(([x, y]) => (x - centres[i][0]) ** 2 + (y - centres[i][1]) ** 2))])
    .filter(([, opacity]) => opacity > 0.9);
"""


def _front_point(driver):
    """The front's marker farthest from any other: a click there cannot pick a neighbour."""
    return max(driver.execute_script(FRONT_POINTS), key=lambda found: found[2])[0]


def test_search_page_in_chromium(dashboard, browser, seeded, artifacts):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(f"{dashboard}/?search={seeded.search_id}")
    _wait(browser, lambda d: _css(d, ".js-plotly-plot .scatterlayer path.point"))
    _wait(browser, lambda d: len(_shown_metrics(d)) >= 6)
    shown = _shown_metrics(browser)
    progress = readout.progress(seeded.spec(), seeded.rows())
    assert shown["training runs"] == progress["trained"]
    assert shown["candidates"] == progress["candidates"]
    assert shown["proposals"] == progress["proposals"]
    assert shown["pruned"] == progress["pruned"]
    assert shown["hypervolume"] == pytest.approx(progress["hypervolume"], rel=1e-5)
    for name, value in progress["leader"]["values"].items():  # one trial's, not a mix
        assert shown[f"leader {name}"] == pytest.approx(value, rel=1e-5)
    _screenshot(browser, artifacts / "search-page.png")
    _next_table_page(browser)

    front = {p["trial_id"] for p in readout.pareto(seeded.spec(), seeded.rows())["points"]}
    ActionChains(browser).move_to_element(_front_point(browser)).click().perform()
    _wait(browser, lambda d: "trial=" in d.current_url)
    number = int(browser.current_url.split("trial=")[1].split("&")[0])
    assert number in front
    _wait(browser, lambda d: any(h.text == f"Trial {number}" for h in _css(d, "h1")))
    _wait(browser, lambda d: "Metrics at every fidelity" in d.page_source)
    _screenshot(browser, artifacts / "trial-page.png")


def _next_table_page(driver) -> None:
    """The trial table's "Next" button shows rows 51-100 (page 2)."""
    from selenium.webdriver.common.by import By

    button = driver.find_element(By.XPATH, "//button[.//p[text()='Next →']]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    _wait(driver, lambda d: "Page 2 of" in d.find_element(By.TAG_NAME, "body").text)
    driver.execute_script("window.scrollTo(0, 0);")


def _screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a drawn page, not a blank one
    if path.name == "search-page.png" and os.environ.get("WINNOW_UPDATE_SCREENSHOT") == "1":
        _small_copy(path, ROOT / "docs" / "img" / path.name)


def _small_copy(source: Path, target: Path) -> None:
    """The README's copy: a palette PNG, well under 300 KB."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("RGB")
    image = image.resize((1100, round(image.height * 1100 / image.width)), Image.LANCZOS)
    image.quantize(colors=128).save(target, optimize=True)
