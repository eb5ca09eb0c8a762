"""The web app in a real headless browser (Debian's chromium and chromedriver, driven by Selenium; no
browser is downloaded): load the page, type a query, see the expected result cards, open a track page
and find its video playable (the element reports a duration)."""
from __future__ import annotations

import shutil

import pytest

from tests.test_serve import Running, index  # noqa: F401 (the module fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                 "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, script: str, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: d.execute_script(script))


def test_search_and_track_page_in_chromium(browser, index, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    s = Running(index)
    try:
        browser.get(s.url + "/")
        _wait(browser, "return document.getElementById('camera').options.length > 1")
        assert "4 tracks, 2 camera(s)" in browser.find_element(By.ID, "stats").text
        box = browser.find_element(By.ID, "q")
        box.send_keys("woman in a red top, no hat, with an umbrella")
        browser.find_element(By.ID, "go").click()
        _wait(browser, "return document.querySelectorAll('.card').length >= 4")
        assert browser.find_element(By.ID, "read-as").text == "female, colour=red, not Hat"
        assert "umbrella" in browser.find_element(By.ID, "unknown").text
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        top = [c.find_element(By.CSS_SELECTOR, ".cam").text for c in cards[:2]]
        assert sorted(top) == ["gate · #1", "lobby · #1"] and "colour: red" in cards[0].text
        assert "?q=woman" in browser.current_url  # the search is in the URL: shareable, back button works
        browser.save_screenshot(str(tmp_path / "search.png"))
        cards[0].click()
        _wait(browser, "return location.pathname.startsWith('/track/')")
        duration = _wait(browser, "const v = document.getElementById('clip');"
                                  "return v && v.readyState >= 1 && v.duration > 0 ? v.duration : null")
        assert duration == pytest.approx(3.0 if "gate" in browser.title else 2.4, abs=0.3)
        assert "colour: red" in browser.find_element(By.ID, "labels").text
        browser.find_element(By.ID, "like").click()
        _wait(browser, "return document.querySelectorAll('.card').length >= 4")
        assert "More like track" in browser.find_element(By.ID, "reading").text
    finally:
        s.stop()
