"""Headless Chromium (Debian's `chromium` + `chromium-driver`) through Selenium for the console
tests, and the checks every page gets: a screenshot, axe-core (no serious or critical
violations), no console errors or failed requests, no horizontal scroll at 375 px, every
control reachable by Tab."""

import os
import time

import pytest
import requests

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def shots_dir() -> str:
    base = os.environ.get("FLYWHEEL_E2E_OUT") or os.path.join(
        os.environ.get("FLYWHEEL_CACHE", os.path.expanduser("~/.cache/flywheel")), "e2e-out")
    d = os.path.join(base, "console")
    os.makedirs(d, exist_ok=True)
    return d


def new_browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: scripts/e2e.sh installs chromium and chromium-driver", pytrace=False)
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _gone(element) -> bool:
    """Whether ELEMENT left the document. Selenium's `staleness_of` knows only the stale-element
    error; Chromium 156 may instead answer that the node "does not belong to the document" when
    the page was replaced between the lookup and the check."""
    try:
        return staleness_of(element)(None)
    except WebDriverException as e:
        if "does not belong to the document" in str(e) or "No node with given id" in str(e):
            return True
        raise


class Browser:
    """One browser (one cookie jar) as one person."""

    def __init__(self, base_url: str):
        self.base = base_url
        self.d = new_browser()
        with open(os.environ["FLYWHEEL_AXE_JS"]) as f:
            self.axe = f.read()

    def close(self):
        self.d.quit()

    def go(self, path: str):
        self.d.get(self.base + path)
        self.wait_ready()

    def wait_ready(self):
        WebDriverWait(self.d, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def path(self) -> str:
        return self.d.current_url[len(self.base):]

    def fill(self, css: str, value: str):
        el = self.d.find_element(By.CSS_SELECTOR, css)
        el.clear()
        el.send_keys(value)

    def submit(self, css: str):
        """Submits the form by its button and waits for the next page."""
        form = self.d.find_element(By.CSS_SELECTOR, css)
        self.navigating(lambda: form.find_element(By.CSS_SELECTOR, "button[type=submit]").click())

    def navigating(self, action):
        """Runs ACTION, then waits until the page it leads to has loaded."""
        old = self.d.find_element(By.TAG_NAME, "html")
        action()
        WebDriverWait(self.d, 30).until(lambda _: _gone(old))
        self.wait_ready()

    def text(self, css: str) -> str:
        return self.d.find_element(By.CSS_SELECTOR, css).text

    def has(self, css: str) -> bool:
        return len(self.d.find_elements(By.CSS_SELECTOR, css)) > 0

    def session(self) -> requests.Session:
        """A `requests` session with this browser's cookies."""
        s = requests.Session()
        for c in self.d.get_cookies():
            s.cookies.set(c["name"], c["value"], path=c.get("path", "/"))
        return s

    def csrf(self) -> str:
        return self.d.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")

    def console_errors(self) -> list:
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def sign_in(self, email: str, password: str):
        self.go("/console/sign-in")
        self.fill("#email", email)
        self.fill("#password", password)
        self.submit("form[action='/console/sign-in']")

    def sign_out(self):
        self.submit("form[action='/console/sign-out']")
        assert self.path().startswith("/console/sign-in"), self.path()

    def check_page(self, name: str, checked: list):
        """Screenshot, axe, console errors, 375 px, Tab order; records NAME in CHECKED."""
        d = self.d
        d.save_screenshot(os.path.join(shots_dir(), f"{name}.png"))
        d.execute_script(self.axe)
        result = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
            "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));")
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: axe violations {bad}"
        errors = self.console_errors()
        assert not errors, f"{name}: browser console errors {errors}"
        self.tab_reaches_every_control(name)
        size = d.get_window_size()
        try:
            d.set_window_size(375, 800)
            time.sleep(0.2)
            scroll, client = d.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            d.save_screenshot(os.path.join(shots_dir(), f"{name}-375.png"))
            wide = d.execute_script(
                "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
                "document.documentElement.clientWidth + 1 && !e.closest('.scroll')).slice(0, 5)"
                ".map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))")
            assert scroll <= client, f"{name}: horizontal scroll at 375 px ({scroll} > {client}): {wide}"
        finally:
            d.set_window_size(size["width"], size["height"])
        checked.append(name)

    def load_figures(self):
        """(time to DOM interactive in ms, load event end in ms, bytes transferred) of the page
        just loaded, from the browser's own navigation and resource timing."""
        return self.d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "const bytes = performance.getEntriesByType('resource').reduce((s, r) => s + (r.transferSize || 0),"
            " n.transferSize || 0);"
            "return [n.domInteractive, n.loadEventEnd, bytes];")

    def tab_reaches_every_control(self, name: str):
        d = self.d
        total = d.execute_script(
            "const els = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, "
            "textarea, summary, [tabindex]:not([tabindex=\"-1\"])')].filter(e => e.offsetParent !== null && !e.disabled);"
            "els.forEach((e, i) => e.dataset.fwtab = String(i)); document.activeElement.blur(); return els.length;")
        d.execute_script("window.scrollTo(0, 0);")
        seen = set()
        for _ in range(total + 5):
            ActionChains(d).send_keys(Keys.TAB).perform()
            mark = d.execute_script("return document.activeElement && document.activeElement.dataset.fwtab")
            if mark is not None:
                seen.add(mark)
            if len(seen) == total:
                break
        missing = total - len(seen)
        assert missing == 0, f"{name}: {missing} of {total} controls not reached by Tab"
