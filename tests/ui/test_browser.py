"""End to end in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium; nothing is downloaded): the dashboard on a store of three seeded searches,
one browser and one server for the module. The Search page's Pareto chart and numbers, its newer
views (intermediate values, the evidence ladder, importance, parallel coordinates and slices,
the timeline, range filters on the trial table), a confirmed search's "Confirmed front" and
the Compare page are each checked against the store; a click opens a trial.
Screenshots are kept as test artifacts (``runs/test-artifacts/ui``, or
``$WINNOW_TEST_ARTIFACTS``); ``WINNOW_UPDATE_SCREENSHOT=1`` also refreshes the README's copies
in ``docs/img/``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ui.conftest import serve
from winnow.bench.seed import seed_search
from winnow.records import TrialRecord
from winnow.service.demo import DEMO_SPEC
from winnow.service.engine import readout
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, reads, sqlite_url
from winnow.ui import comparison, nav

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
# The screenshots the README and docs show (docs/img/), refreshed by WINNOW_UPDATE_SCREENSHOT=1
DOCS_IMAGES = {
    "search-page.png",
    "compare-page.png",
    "search-parameters.png",
    "search-timeline-table.png",
    "search-confirmed.png",
    "search-curves.png",
}
WAIT = 60  # seconds for the first page: Streamlit's server starts its session


@dataclass
class Stored:
    """Finished digits searches in one store: ``first`` (600 proposals, the one the Search
    page tests open), ``second`` (300, another seed), for the Compare page, and ``confirmed``
    (300, with ``strategy.confirm`` and its runs: ``bench.seed``)."""

    url: str
    store: Store
    first: str
    second: str
    confirmed: str

    def spec(self, search_id: str) -> SearchSpec:
        return SearchSpec.model_validate_json(self.store.search(search_id).spec_json)

    def rows(self, search_id: str) -> list[TrialRecord]:
        return self.store.trials(search_id)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Iterator[Stored]:
    url = sqlite_url(tmp_path_factory.mktemp("browser") / "two.db")
    store = Store(url)
    first = seed_search(store, 600, seed=3)
    second = seed_search(store, 300, seed=8, changes={"name": "seeded-digits-b"})
    strategy = DEMO_SPEC["strategy"] | {"confirm": {"top_k": 5, "seeds": 3}}
    changes = {"name": "seeded-digits-confirmed", "strategy": strategy}
    confirmed = seed_search(store, 300, seed=9, changes=changes)
    yield Stored(url, store, first, second, confirmed)
    store.close()


@pytest.fixture(scope="module")
def dashboard(stored, tmp_path_factory) -> Iterator[str]:
    with serve(stored.url, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium for the module: each test opens its page by URL (a session of its own)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
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


def test_search_page_in_chromium(dashboard, browser, stored, artifacts):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(f"{dashboard}/?search={stored.first}")
    _wait(browser, lambda d: _css(d, ".js-plotly-plot .scatterlayer path.point"))
    _wait(browser, lambda d: len(_shown_metrics(d)) >= 6)
    shown = _shown_metrics(browser)
    progress = readout.progress(stored.spec(stored.first), stored.rows(stored.first))
    assert shown["training runs"] == progress["trained"]
    assert shown["candidates"] == progress["candidates"]
    assert shown["proposals"] == progress["proposals"]
    assert shown["pruned"] == progress["pruned"]
    assert shown["hypervolume"] == pytest.approx(progress["hypervolume"], rel=1e-5)
    for name, value in progress["leader"]["values"].items():  # one trial's, not a mix
        assert shown[f"leader {name}"] == pytest.approx(value, rel=1e-5)
    _screenshot(browser, artifacts / "search-page.png")
    _next_table_page(browser)

    front = {
        p["trial_id"]
        for p in readout.pareto(stored.spec(stored.first), stored.rows(stored.first))["points"]
    }
    ActionChains(browser).move_to_element(_front_point(browser)).click().perform()
    _wait(browser, lambda d: "trial=" in d.current_url)
    number = int(browser.current_url.split("trial=")[1].split("&")[0])
    assert number in front
    _wait(browser, lambda d: any(h.text == f"Trial {number}" for h in _css(d, "h1")))
    _wait(browser, lambda d: "Metrics at every fidelity" in d.page_source)
    _screenshot(browser, artifacts / "trial-page.png")


def test_compare_page_in_chromium(dashboard, browser, stored, artifacts):
    ids = [stored.first, stored.second]
    browser.get(f"{dashboard}/?compare={','.join(ids)}")
    _wait(browser, lambda d: len(_css(d, ".js-plotly-plot")) >= 2)
    _wait(browser, lambda d: len(_shown_metrics(d)) >= 2)
    specs = [stored.spec(i) for i in ids]
    done = {
        i: [c.values for c in readout.completed_trials(stored.spec(i), stored.rows(i))] for i in ids
    }
    shared = comparison.shared_objectives(specs)
    fixed = comparison.shared_reference(shared, specs, [p for i in ids for p in done[i]])
    shown, sizes = _shown_metrics(browser), _caption(browser, "Front points:")
    for search_id in ids:
        name = f"{stored.store.search(search_id).name} ({search_id})"
        progress = readout.progress(stored.spec(search_id), stored.rows(search_id))
        assert f"{name} {progress['front_size']:,}" in sizes
        final = readout.hypervolume_history(fixed, done[search_id])[-1]
        assert shown[f"shared hypervolume · {name}"] == pytest.approx(final, rel=1e-5)
    _screenshot(browser, artifacts / "compare-page.png")


def test_search_page_views_in_chromium(dashboard, browser, stored, artifacts):
    """The Search page's newer views, opened once: each one's stated numbers against the store."""
    browser.get(f"{dashboard}/?search={stored.first}")
    _wait(browser, lambda d: _caption(d, "one line each, across"))
    spec, top = stored.spec(stored.first), stored.spec(stored.first).strategy.rungs[-1]
    trained = reads.trained(stored.store, stored.first)
    at_top = trained[trained["epochs"] == top]  # what the views default to: the top rung
    _check_parameters(browser, spec, top, at_top)
    _check_importance(browser, spec, top, at_top)
    _scroll_to_heading(browser, "Parameter importance")
    _screenshot(browser, artifacts / "search-parameters.png")
    rows = stored.rows(stored.first)
    _check_curves(browser, spec, rows)
    _check_ladder(browser, spec, rows)
    _scroll_to_heading(browser, "Intermediate values")
    _screenshot(browser, artifacts / "search-curves.png")
    _check_timeline(browser, rows)
    _check_range(browser, rows)
    _scroll_to_heading(browser, "Timeline of runs per worker")
    _screenshot(browser, artifacts / "search-timeline-table.png")


def test_confirmed_front_in_chromium(dashboard, browser, stored, artifacts):
    """A confirmed search's "Confirmed front": each shown mean, standard deviation, lower
    bound and seed count is ``readout.pareto``'s, in its order, and those that fell off say so."""
    browser.get(f"{dashboard}/?search={stored.confirmed}")
    table = _wait(browser, lambda d: _css(d, '[data-testid="stTable"] table'))[0]
    spec = stored.spec(stored.confirmed)
    points = readout.pareto(spec, stored.rows(stored.confirmed))["points"]
    header = [th.text for th in table.find_elements("css selector", "thead th")]
    cells = [
        dict(
            zip(header, [td.text for td in tr.find_elements("css selector", "th, td")], strict=True)
        )
        for tr in table.find_elements("css selector", "tbody tr")
    ]
    assert [c["trial"] for c in cells] == [f"#{p['trial_id']}" for p in points]
    fell = 0
    for cell, point in zip(cells, points, strict=True):
        found = point.get("confirmed")
        if found is None:
            assert cell["standing"] == "not confirmed"
            continue
        fell += not point["on_confirmed_front"]
        standing = "confirmed" if point["on_confirmed_front"] else "fell off when confirmed"
        assert cell["standing"] == standing and int(cell["seeds"]) == found["seeds"] == 3
        for o in spec.objectives:
            mean, std = (nav.parse(t) for t in cell[o.name].split(" ± "))
            assert mean == pytest.approx(found[o.name]["mean"], rel=1e-5)
            assert std == pytest.approx(found[o.name]["std"], rel=1e-5, abs=1e-9)
            side = "lower" if o.direction == "maximize" else "upper"
            lower = nav.parse(cell[f"{o.name} {side} bound"])
            assert lower == pytest.approx(found[o.name]["lower"], rel=1e-5)
    assert fell > 0  # the seeded store shows the winner's curse
    said = _caption(browser, "front points confirmed")
    assert f"{fell:,} fell off the front when confirmed" in said
    drawn = _wait(browser, lambda d: d.execute_script(CONFIRMED_MARKERS))  # means on the chart
    confirmed = [p for p in points if p.get("confirmed") is not None]
    kept = sum(1 for p in confirmed if p["on_confirmed_front"])
    assert drawn == {"confirmed mean": kept, "confirmed mean (fell off when confirmed)": fell}
    _scroll_to_heading(browser, "Pareto front")
    _screenshot(browser, artifacts / "search-confirmed.png")


# The markers drawn per confirmed-mean trace of the Pareto chart: each scatter trace's group
# carries its trace (plotly binds its calcdata, whose first item holds the trace, to the group).
CONFIRMED_MARKERS = """
const counts = {};
for (const group of document.querySelectorAll('.js-plotly-plot .scatterlayer g.trace')) {
    const name = (group.__data__ && group.__data__[0].trace.name) || '';
    if (name.startsWith('confirmed mean'))
        counts[name] = (counts[name] || 0) + group.querySelectorAll('path.point').length;
}
return counts;
"""


def _check_parameters(driver, spec: SearchSpec, top: int, at_top) -> None:
    """Parallel coordinates: a line per top-rung result; the slice plot: its points and the
    best of them."""
    results = [m for m in at_top["metrics"] if all(o.name in m for o in spec.objectives)]
    lines = f"{len(results):,} results trained for {top} epochs, one line each"
    assert lines in _caption(driver, "one line each, across")
    sliced = _wait(driver, lambda d: _caption(d, "results with "))
    param = re.match(r"[\d,]+ results with (\S+), one point each", sliced)[1]
    decided = [readout.decisions(spec.search_space, c) for c in at_top["candidate"]]
    having = [
        m for m, d in zip(at_top["metrics"], decided, strict=True) if d.get(param) is not None
    ]
    best = max(m[spec.objectives[0].name] for m in having)  # the slice's default: accuracy
    assert sliced.startswith(f"{len(having):,} results with {param}, one point each")
    assert f"the best {spec.objectives[0].name}, {nav.fmt(best)}, is trial #" in sliced


def _check_importance(driver, spec: SearchSpec, top: int, at_top) -> None:
    """Importance, computed on request: the top parameter winnow's own evaluation finds."""
    from winnow.service.engine import importance

    _click_label(driver, "Compute importance")
    text = _wait(driver, lambda d: _caption(d, "Most important:"))
    objective = spec.objectives[0]  # the page's default
    metrics = zip(at_top["candidate"], at_top["metrics"], strict=True)
    pairs = [(c, m.get(objective.name)) for c, m in metrics]
    found = importance.fidelity_importance(spec.search_space, top, objective, pairs)
    first, weight = next(iter(found.params.items()))
    assert text.startswith(f"Most important: {first} ({weight:.2f}).")
    assert f"over {found.trials:,} results" in text
    assert len(_css(driver, ".js-plotly-plot .barlayer .point")) >= len(found.params)


# Each trace of the intermediate-values chart (the plot whose subplot titles name its
# panels): its name, the x axis it is drawn on ("x": accuracy, "x2": loss), its values.
CURVE_TRACES = """
const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => (p.layout
    && (p.layout.annotations || []).some(a => a.text === 'test accuracy per epoch')));
return plot ? plot._fullData.map(t => [t.name, t.xaxis, Array.from(t.y)]) : null;
"""


def _check_curves(driver, spec: SearchSpec, rows: list[TrialRecord]) -> None:
    """Intermediate values: a line per result of the front's rung, at most ``CURVE_LINES``;
    a drawn accuracy line ends at its trial's stored last accuracy."""
    from winnow.ui.search_sections import CURVE_LINES

    epochs = readout.pareto(spec, rows)["epochs"]
    at_rung = {  # a hash hit (status duplicate) is a result too: its stored curve is drawn
        r.number: r
        for r in rows
        if r.stage == "train"
        and r.epochs == epochs
        and r.status != "failed"
        and all(o.name in r.metrics for o in spec.objectives)
    }
    traces = _wait(driver, lambda d: d.execute_script(CURVE_TRACES))
    accuracy = {name: y for name, axis, y in traces if axis == "x"}
    assert len({name for name, _, _ in traces}) == min(CURVE_LINES, len(at_rung))
    assert len(accuracy) == min(CURVE_LINES, len(at_rung))  # every seeded run has its curve
    name, drawn = next(iter(accuracy.items()))
    stored_curve = at_rung[int(name.removeprefix("trial "))].accuracy_curve
    assert drawn[-1] == pytest.approx(stored_curve[-1], rel=1e-9)
    of = f"The best {min(CURVE_LINES, len(at_rung)):,} of {len(at_rung):,} results"
    assert of in _caption(driver, "one line each: the test accuracy")


# The evidence ladder's cells: tier -> tau. The grid draws on a canvas; the accessible table
# glide keeps behind it holds each cell's value in full (the canvas rounds it to 4 places,
# Streamlit's default number format) and "" for a missing one (drawn as "None").
LADDER_CELLS = """
for (const grid of document.querySelectorAll('[data-testid="stDataFrame"]')) {
    const head = [...grid.querySelectorAll('table thead th')].map(th => th.textContent.trim());
    const tier = head.indexOf('tier'), tau = head.indexOf('kendall tau');
    if (tier < 0 || tau < 0) continue;
    return [...grid.querySelectorAll('table tbody tr')].map(tr => {
        const cells = [...tr.querySelectorAll('td')].map(td => td.textContent.trim());
        return [cells[tier], cells[tau]]; });
}
return null;
"""


def _check_ladder(driver, spec: SearchSpec, rows: list[TrialRecord]) -> None:
    """The evidence ladder: each tier's Kendall tau in the grid is the store's (to float
    precision, so its 4 places drawn are the store's rounded); a tier with none shows none."""
    ladder = readout.progress(spec, rows)["evidence_ladder"]
    assert sum(t["tau"] is not None for t in ladder) >= 2  # the seeded cascade has a ladder
    shown = dict(_wait(driver, lambda d: d.execute_script(LADDER_CELLS)))
    assert list(shown) == [t["tier"] for t in ladder]
    for tier in ladder:
        text = shown[tier["tier"]]
        if tier["tau"] is None:
            assert text == ""
        else:
            assert float(text) == pytest.approx(tier["tau"], rel=1e-12)


def _check_timeline(driver, rows: list[TrialRecord]) -> None:
    """The runs drawn (a hash hit runs nothing) and how many ran at once."""
    caption = _wait(driver, lambda d: _caption(d, "finished runs"))
    ran = [r for r in rows if r.finished_at is not None and not r.reused]
    assert f"{min(len(ran), 2000):,} finished runs" in caption  # source.TIMELINE_RUNS
    assert f"seed · cpu: {_most_at_once(ran)} at once" in caption


def _check_range(driver, rows: list[TrialRecord]) -> None:
    """A metric range narrows the trial table to the store's rows in it."""
    _choose(driver, "ranges on", "accuracy")
    _type(driver, "accuracy at least", "0.9")
    kept = sum(1 for r in rows if r.metrics.get("accuracy", float("-inf")) >= 0.9)
    assert 0 < kept < len(rows)
    _wait(driver, lambda d: f"· {kept:,} rows" in _body_text(d))


def _most_at_once(runs: list[TrialRecord]) -> int:
    """The most runs overlapping in time (a run starting as another ends does not overlap)."""
    ends = [(r.finished_at, 0) for r in runs] + [(r.finished_at - r.seconds, 1) for r in runs]
    most = now = 0
    for _, starts in sorted(ends):
        now += 1 if starts else -1
        most = max(most, now)
    return most


def _body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _caption(driver, part: str) -> str:
    """The first caption holding ``part`` ("" while there is none)."""
    for caption in _css(driver, '[data-testid="stCaptionContainer"]'):
        if part in caption.text:
            return caption.text
    return ""


def _widget(driver, testid: str, label: str):
    from selenium.webdriver.common.by import By

    path = f"//div[@data-testid='{testid}'][.//label//p[text()='{label}']]"
    found = _wait(driver, lambda d: d.find_elements(By.XPATH, path))[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", found)
    return found


def _click_label(driver, label: str) -> None:
    """A checkbox or toggle, by its label."""
    _widget(driver, "stCheckbox", label).find_element("css selector", "label").click()


def _choose(driver, label: str, option: str) -> None:
    """A multiselect's option, typed and taken with Enter."""
    from selenium.webdriver.common.keys import Keys

    field = _widget(driver, "stMultiSelect", label).find_element("css selector", "input")
    field.click()
    field.send_keys(option, Keys.ENTER, Keys.ESCAPE)


def _type(driver, label: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = _widget(driver, "stTextInput", label).find_element("css selector", "input")
    field.send_keys(text, Keys.ENTER)


def _scroll_to_heading(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    heading = driver.find_element(By.XPATH, f"//h3[.//text()='{text}'] | //h3[text()='{text}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)


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
    if path.name in DOCS_IMAGES and os.environ.get("WINNOW_UPDATE_SCREENSHOT") == "1":
        _small_copy(path, ROOT / "docs" / "img" / path.name)


def _small_copy(source: Path, target: Path) -> None:
    """The README's copy: a palette PNG, well under 400 KB."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("RGB")
    image = image.resize((1100, round(image.height * 1100 / image.width)), Image.LANCZOS)
    image.quantize(colors=128).save(target, optimize=True)
