"""The web page in a real headless Chromium: it loads, a message streams both replies, the slider sets α."""

import shutil

import pytest


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser():
    chrome = _browser()
    try:
        yield chrome
    finally:
        chrome.quit()


def test_page_streams_replies_and_slider_sets_alpha(server, browser, proxy_models):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from proxytool.decoding.generate import complete

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 30)
    assert browser.title == "proxytool chat"
    wait.until(lambda b: b.find_element(By.ID, "model").text == "tiny")

    slider = browser.find_element(By.ID, "alpha")
    slider.send_keys(Keys.END)  # max: α = 3
    for _ in range(10):
        slider.send_keys(Keys.ARROW_LEFT)  # down to 2.0
    assert browser.find_element(By.ID, "alpha-value").text == "2.0"
    assert browser.find_element(By.ID, "alpha-label").text == "2.0"

    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("8")
    box = browser.find_element(By.ID, "message")
    box.send_keys("Who leads the poll?")
    box.send_keys(Keys.ENTER)
    replies = lambda b: b.find_elements(By.CSS_SELECTOR, ".reply")  # noqa: E731
    wait.until(lambda b: len(replies(b)) == 2 and all(r.get_attribute("data-done") == "true" for r in replies(b)))
    base, proxy = replies(browser)
    assert base.get_attribute("data-alpha") == "0" and proxy.get_attribute("data-alpha") == "2"
    messages = [{"role": "user", "content": "Who leads the poll?"}]
    assert proxy.text == complete(proxy_models, [messages], max_new_tokens=8, alphas=[2.0])[0].text
    assert base.text == complete(proxy_models, [messages], max_new_tokens=8, alphas=[0.0])[0].text
    tokens = proxy.find_elements(By.CSS_SELECTOR, ".token")
    assert tokens and all(t.get_attribute("data-delta") is not None for t in tokens)
    assert "done" in browser.find_element(By.ID, "status").text

    ActionChains(browser).move_to_element(tokens[0]).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    wait.until(lambda b: tooltip.is_displayed())
    assert "proxy top" in tooltip.text and "base top" in tooltip.text
