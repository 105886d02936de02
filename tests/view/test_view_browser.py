"""The viewer in a real headless browser (Debian's chromium through Selenium and chromedriver).

Pages load without console errors, KaTeX typesets the problem and the gold answer, the groups
filters and pagination work by clicking, and a trace carrying `<script>` and an `onerror` handler
stays text. With DYPO_VIEW_SCREENSHOTS=DIR each page's screenshot is saved there as PNG (the
README's pictures: `DYPO_VIEW_SCREENSHOTS=docs pytest tests/view/test_view_browser.py`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("the browser tests need Debian's chromium and chromium-driver (make install adds them as root: "
                "apt-get install chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server_url(view_store):
    """The real server (uvicorn over a bound socket, as `dypo-data view` runs it) in a thread."""
    import uvicorn

    from dypo_data.view.app import create_app
    from dypo_data.view.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(view_store.root), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url_of(sock).rstrip("/")
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,860",
                "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _open(browser, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.body.dataset.mathRendered") == "1")


def _console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(browser, name: str) -> None:
    folder = os.environ.get("DYPO_VIEW_SCREENSHOTS")
    if not folder:
        return
    path = Path(folder) / f"view-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)  # a few hundred KiB -> ~100


def test_every_page_loads_without_console_errors(browser, server_url, view_store):
    math_mid = [p for p in view_store.prompts if "\\frac" in p["problem"] or "$x$" in p["problem"]]
    pid = math_mid[0]["prompt_id"]
    pages = {"overview": "/", "groups": "/groups", "prompt": f"/prompt/{pid}", "runs": "/runs",
             "skipped": "/runs/dypo-a/skipped?step=2", "eval": "/eval", "error": "/groups?tier=nope"}
    for name, path in pages.items():
        browser.get_log("browser")  # drop what earlier pages logged
        _open(browser, server_url + path)
        errors = [e for e in _console_errors(browser) if not (name == "error" and "400 (Bad Request)" in e)]
        assert errors == [], f"{path}: {errors}"
        assert browser.find_elements(By.CSS_SELECTOR, "main h1"), path
        _screenshot(browser, name)


def test_math_is_typeset(browser, server_url, view_store):
    prompt = next(p for p in view_store.prompts if "\\frac" in p["problem"] or "$" in p["problem"])
    _open(browser, f"{server_url}/prompt/{prompt['prompt_id']}")
    assert browser.find_elements(By.CSS_SELECTOR, ".problem .katex")
    assert browser.find_elements(By.CSS_SELECTOR, ".gold-answer .katex")
    assert not browser.find_elements(By.CSS_SELECTOR, ".katex-error")
    assert "$" not in browser.find_element(By.CSS_SELECTOR, ".problem").text.replace("$x$", "")


def test_injected_script_stays_text(browser, server_url, view_store):
    _open(browser, f"{server_url}/prompt/{view_store.prompts[0]['prompt_id']}")
    assert browser.execute_script("return window.__dypo_pwned === undefined")
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "article.teacher pre.completion")]
    assert any("<script>window.__dypo_pwned = 1;</script>" in t for t in texts)
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.completion script, pre.completion img")


def test_filters_and_pagination_by_clicking(browser, server_url, view_store):
    _open(browser, f"{server_url}/groups?per_page=5")
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, "table.groups tbody tr")  # noqa: E731
    first_page = [r.text for r in rows()]
    assert len(first_page) == 5
    browser.find_element(By.CSS_SELECTOR, 'a[rel="next"]').click()
    WebDriverWait(browser, 10).until(lambda d: "page=2" in d.current_url)
    second_page = [r.text for r in rows()]
    assert len(second_page) == 5 and not set(first_page) & set(second_page)
    Select(browser.find_element(By.NAME, "tier")).select_by_value("hard")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: "tier=hard" in d.current_url)
    tiers = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.groups tbody .tier")]
    assert tiers == ["hard"] * len(view_store.groups_of("hard"))
    assert "per_page=5" in browser.current_url
    search = browser.find_element(By.NAME, "q")
    search.send_keys("no problem says this")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: "q=no+problem" in d.current_url)
    assert rows() == [] and "no group matches" in browser.page_source
