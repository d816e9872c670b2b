"""The dashboard (`/`) in headless Chromium, driven by Playwright, against a real
`tuneforge serve`: start a job from the form and watch it, the job list, stop/resume, the
playground, the models page and the token dialog. Each test keeps a screenshot of its last
page under its tmp_path/screenshots.

Needs Debian's chromium (the Makefile's dev install puts it there; Playwright's own browser
download cannot work offline) and the `playwright` package; skipped without them."""

from __future__ import annotations

import importlib.util
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from live_server import Server, wait_for

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (the Makefile's dev install adds it)",
                allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is not installed", allow_module_level=True)

from playwright.sync_api import Browser, Page, Response, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.serial

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
WAIT_MS = 120_000  # the longest any one expectation waits: a job's worker loads torch first
UI_MS = 20_000  # what a page needs to show what the server already has


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context's page; its screenshot is kept when the test ends (pass or
    fail) as tmp_path/screenshots/<test name>.png."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    name = re.sub(r"[^\w.-]", "_", request.node.name)
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def train(server: Server, model: Path, **options: Any) -> str:
    """Queue a job over HTTP; its task_id."""
    response = server.http.post("/train", json={
        "base_model": str(model), "dataset_path": "data/chat.jsonl", **options})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call `check` until it answers something true, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return answer


def test_a_job_started_from_the_form_shows_its_curve_events_log_and_model(
        service: Server, page: Page, tiny_llm_dir: Path) -> None:
    page.goto(service.url + "/#/new")
    form = page.locator("#new-job-form")
    form.locator("[name=base_model]").fill(str(tiny_llm_dir))
    form.locator("[name=dataset_path]").fill("data/chat.jsonl")
    form.locator("[name=max_steps]").fill("6")
    form.locator("[name=logging_steps]").fill("1")
    form.locator("[name=save_steps]").fill("2")
    page.locator("#start-job").click()

    page.wait_for_url(re.compile(r"#/jobs/.+"))
    expect(page.locator("#form-error")).to_be_hidden()
    task_id = page.url.split("#/jobs/", 1)[1]
    expect(page.locator("#job-id")).to_have_text(task_id)
    assert service.http.get(f"/train/status/{task_id}").status_code == 200

    chart = page.locator("canvas#loss-chart")
    expect(chart).not_to_have_attribute("data-points", "0", timeout=WAIT_MS)
    status = page.locator("#job-status")
    expect(status).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
    expect(chart).to_have_attribute("data-points", "6")  # logging_steps 1: every step
    expect(page.locator("#job-progress .progress-text")).to_have_text("100%")
    expect(page.locator("#job-step")).to_have_text("6 / 6")
    expect(page.locator("#job-loss")).not_to_have_text("–")

    events = page.locator("#job-events > li")
    expect(events.first).to_be_visible()
    expect(page.locator('#job-events > li[data-event="status"]').last).to_contain_text(
        "completed")
    expect(page.locator("#job-events")).to_have_attribute("data-ended", "true")
    expect(page.locator("#job-log")).not_to_be_empty()

    model = page.locator("#job-model")
    expect(model).to_be_visible()
    expect(model.locator("code")).not_to_be_empty()
    fine_tuned = service.http.get(f"/train/status/{task_id}").json()["fine_tuned_model"]
    expect(model.locator("code")).to_have_text(fine_tuned)
    expect(page.locator("#job-model-link")).to_have_attribute(
        "href", re.compile(r"^#/playground\?model="))
    expect(page.locator("#stop-job")).to_be_disabled()
    expect(page.locator("#resume-job")).to_be_disabled()
    expect(page.locator("#job-action-error")).to_be_hidden()


def test_the_job_list_follows_a_job_row(service: Server, page: Page,
                                        tiny_llm_dir: Path) -> None:
    page.goto(service.url + "/")
    expect(page.locator("#nav-jobs")).to_have_class(re.compile(r"\bactive\b"))
    task_id = train(service, tiny_llm_dir, max_steps=8, logging_steps=1, save_steps=4)
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".task-id")).to_have_text(task_id)

    seen: list[tuple[str, str]] = []

    def finished() -> bool:
        state = (row.locator(".status").text_content() or "",
                 row.locator(".progress-text").text_content() or "")
        if not seen or seen[-1] != state:
            seen.append(state)
        return state[0] in ("completed", "failed")

    poll(finished, WAIT_MS / 1000, f"job {task_id}'s row to show it ended")
    assert seen[-1] == ("completed", "100%"), seen
    assert len(seen) >= 2, seen  # it changed while we watched
    assert seen[0][0] in ("queued", "running"), seen
    expect(row).to_have_attribute("data-state", "completed")
    expect(row.locator(".loss")).not_to_have_text("–")
    expect(row.locator(".base-model")).to_have_text(str(tiny_llm_dir))
    expect(page.locator("#jobs-error")).to_be_empty()

    # the row's link opens the job page
    row.locator(".task-id").click()
    page.wait_for_url(re.compile(rf"#/jobs/{task_id}$"))
    expect(page.locator("#job-status")).to_have_attribute("data-state", "completed")


def test_stop_and_resume_buttons(service: Server, page: Page, tiny_llm_dir: Path) -> None:
    task_id = train(service, tiny_llm_dir, max_steps=200, logging_steps=1, save_steps=5)
    page.goto(f"{service.url}/#/jobs/{task_id}")
    status = page.locator("#job-status")
    try:
        # running with a checkpoint behind it, so a resume continues from one
        expect(status).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        expect(page.locator("#loss-chart")).not_to_have_attribute(
            "data-points", re.compile(r"^[0-5]$"), timeout=WAIT_MS)
        assert service.http.get(f"/train/status/{task_id}").json()["state"] == "running"
        stop = page.locator("#stop-job")
        expect(stop).to_be_enabled()
        stop.click()
        expect(status).to_have_attribute("data-state", re.compile("^(stopping|stopped)$"))
        expect(status).to_have_attribute("data-state", "stopped", timeout=WAIT_MS)
        # the status answer may be up to 0.3 s older than the page's live events
        stopped_at = wait_for(service, task_id, ("stopped",), timeout=10)
        assert stopped_at["current_step"] < 200, stopped_at
        expect(stop).to_be_disabled()

        resume = page.locator("#resume-job")
        expect(resume).to_be_enabled()
        resume.click()
        expect(status).to_have_attribute("data-state", re.compile("^(queued|running)$"))
        expect(status).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        expect(page.locator("#job-action-error")).to_be_hidden()
        expect(page.locator("#stop-job")).to_be_enabled()
        # it goes on from its checkpoint: a step past the one it stopped at shows up
        step = page.locator("#job-step")

        def stepped() -> bool:
            shown = re.match(r"\s*(\d+) /", step.text_content() or "")
            return bool(shown) and int(shown.group(1)) > stopped_at["current_step"]

        poll(stepped, WAIT_MS / 1000, "a step after the resume")
    finally:
        # end it over HTTP (the page must follow) so the module does not wait on 200 steps
        service.http.post(f"/train/{task_id}/stop")
        final = wait_for(service, task_id, ("stopped", "completed", "failed"), timeout=120)
    assert final["state"] == "stopped", final
    expect(status).to_have_attribute("data-state", "stopped", timeout=UI_MS)


def test_the_playground_chats_with_the_served_model(service: Server, page: Page) -> None:
    page.goto(service.url + "/#/playground")
    select = page.locator("#pg-model")
    expect(select.locator('option[value="tiny"]')).to_have_count(1)
    select.select_option("tiny")
    page.locator("#pg-max-tokens").fill("8")
    page.locator("#pg-input").fill("Hello there, how are you today?")
    page.locator("#pg-send").click()
    expect(page.locator("#pg-messages .msg.user")).to_have_text(
        re.compile("Hello there, how are you today"))
    reply = page.locator("#pg-messages .msg.assistant")
    expect(reply).to_have_count(1, timeout=60_000)
    expect(page.locator("#pg-messages .msg.error")).to_have_count(0)
    expect(page.locator("#pg-input")).to_have_value("")

    # a typed model id wins over the list
    page.locator("#pg-model-custom").fill("tiny")
    page.locator("#pg-input").fill("And now?")
    page.locator("#pg-send").click()
    expect(reply).to_have_count(2, timeout=60_000)
    expect(page.locator("#pg-messages .msg.error")).to_have_count(0)


def test_the_models_page_lists_the_served_model(service: Server, page: Page) -> None:
    page.goto(service.url + "/#/models")
    expect(page.locator("#nav-models")).to_have_class(re.compile(r"\bactive\b"))
    served = page.locator("#served-list")
    expect(served.locator('li[data-model-id="tiny"]')).to_be_visible()
    expect(served).to_contain_text("tiny")
    for selector in ("#models-list", "#services-list", "#datasets-list"):
        expect(page.locator(selector)).not_to_contain_text("Loading")
        expect(page.locator(f"{selector} .error")).to_have_count(0)


@pytest.fixture(scope="module")
def guarded(tiny_llm_dir: Path, workdir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second service (its own home) that wants the token `secret-token`. It serves the
    tiny model: without one it would load the default model, which takes minutes."""
    server = Server([f"tiny={tiny_llm_dir}"], tmp_path_factory.mktemp("guarded-home"),
                    cwd=workdir,
                    env={"TUNEFORGE_API_TOKEN": "secret-token"})
    yield server
    server.stop()


def test_the_token_dialog_asks_for_the_token_and_the_list_loads(guarded: Server,
                                                                page: Page) -> None:
    assert guarded.http.get("/train/history").status_code == 401
    statuses: list[tuple[int, str]] = []

    def record(response: Response) -> None:
        statuses.append((response.status, response.url))

    page.on("response", record)
    page.goto(guarded.url + "/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#token-message")).to_contain_text("needs a token")

    # a wrong token is rejected and asked for again
    page.locator("#token-input").fill("wrong-token")
    page.locator("#token-save").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#token-message")).to_contain_text("rejected")

    page.locator("#token-input").fill("secret-token")
    statuses.clear()
    page.locator("#token-save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#jobs-empty")).to_be_visible()  # the list loaded: no jobs here
    expect(page.locator("#jobs-total")).to_have_text("0")
    expect(page.locator("#jobs-error")).to_be_empty()
    poll(lambda: any("/train/history" in url and code == 200 for code, url in statuses),
         UI_MS / 1000, "an answered /train/history")
    assert page.evaluate("localStorage.getItem('tuneforge-token')") == "secret-token"

    # it is kept: another page of the dashboard loads with it too
    page.goto(guarded.url + "/#/models")
    expect(page.locator("#datasets-list")).not_to_contain_text("Loading")
    expect(page.locator("#datasets-list .error")).to_have_count(0)
    expect(dialog).to_be_hidden()
    assert not [(code, url) for code, url in statuses if code == 401], statuses
