"""The web monitor in a real headless browser (Debian's chromium): what a person sees."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from broker.monitor.web import monitor_server
from broker.protocol import JobSpec
from broker.store.clock import now
from broker.store.datasets import FileRecord, register
from broker.store.engine import transaction
from broker.store.schema import tasks
from tests.harness import System

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
#: Where to save a screenshot of the sites page (the README's), when set.
SCREENSHOT = os.environ.get("PANDAMQ_MONITOR_SCREENSHOT")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless chromium driven by chromedriver (installed by .ci/run)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed")
        pytest.skip("needs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def monitor(system: System) -> Iterator[str]:
    """The base URL of a monitor on the system's database."""
    server = monitor_server(system.engine, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_a_person_follows_a_failure_from_the_sites_page_to_the_job(
    system: System, monitor: str, browser: WebDriver
) -> None:
    # Given a task whose jobs ran at a site: three finished, one failed
    site = system.new_site()
    task_id = f"task-{site.lower()}"
    with transaction(system.engine) as conn:
        conn.execute(
            tasks.insert().values(id=task_id, name="demo", status="running", created_at=now())
        )
    system.start_broker()
    system.start_pilot(site)
    ok = JobSpec(command="true", site=site, task_id=task_id)
    bad = JobSpec(
        command="echo no input file >&2; exit 3", site=site, task_id=task_id, max_attempts=1
    )
    ids = system.submit(ok, ok, ok, bad)
    system.wait_final(ids)
    # When a person opens the sites page
    browser.get(monitor + "/")
    # Then the site's row says 3 finished, 1 failed, a 25 % error rate
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{site}']]")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    headers = [h.text for h in browser.find_elements(By.TAG_NAME, "th")]
    assert cells[headers.index("finished")] == "3"
    assert cells[headers.index("failed")] == "1"
    assert cells[headers.index("error rate")] == "25.0%"
    assert "no input file" in text(browser)  # recent failures
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)
    # When they click the failed count, then the failed job
    row.find_element(By.LINK_TEXT, "1").click()
    assert browser.title.startswith("Jobs")
    browser.find_element(By.LINK_TEXT, ids[3]).click()
    # Then the job page shows its error, its history and its task
    page = text(browser)
    assert browser.title.startswith(f"Job {ids[3]}")
    assert "no input file" in page and "1305" in page and "holding" in page
    browser.find_element(By.LINK_TEXT, task_id).click()
    assert "Progress: 75.0%" in text(browser)
    # And the error list at the site groups the failure with an example job
    browser.get(f"{monitor}/errors?site={site}")
    assert "payload exited with a non-zero code" in text(browser)
    assert browser.find_element(By.LINK_TEXT, ids[3])


def test_a_person_finds_a_dataset_and_its_files(
    system: System, monitor: str, browser: WebDriver
) -> None:
    # Given an input dataset with a file at a site
    site = system.new_site()
    name = f"user.{site.lower()}:input"
    record = FileRecord("user", "events.root", str(uuid.uuid4()), 2048, "01234567")
    with transaction(system.engine) as conn:
        register(conn, name, [(record, "/se/events.root")], site, now())
    # When a person opens the dataset list and clicks the dataset
    browser.get(monitor + "/datasets")
    browser.find_element(By.LINK_TEXT, name).click()
    # Then they see its file, and that the site has it
    page = text(browser)
    assert browser.title.startswith(f"Dataset {name}")
    assert "user:events.root" in page and f"{site} available 1" in page
