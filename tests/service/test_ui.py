"""The web UI at /ui in a real browser: Debian's Chromium driven by Playwright, against the real app served by
uvicorn (client tokens and an admin token set, so the pages must ask for and send them).

It opens the catalogue (the token asked for once), the demo set's page with its plot, submits an initialization
through the form, watches the job page reach `succeeded` without a reload, downloads the checkpoint and checks its
sha256; axe-core (npm, tests/browser/) checks each page for serious or critical violations, the page's
Content-Security-Policy must not be broken once, and text a client controls is shown as text.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from jobs.settings import Settings
from tests.support.harness import ADMIN_TOKEN
from tests.support.models import random_template_set, tiny_spec
from tests.support.scale import patient
from tests.support.served import Served, served

pytestmark = pytest.mark.service

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AXE = Path(__file__).resolve().parents[1] / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("LEARNGENE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CLIENT_TOKEN = "alice-token"
HOSTILE = "idx:///data/<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("ui")
    settings = Settings(
        store=str(home / "store"),
        artifacts=str(home / "artifacts"),
        work_dir=home / "work",
        admin_token=ADMIN_TOKEN,
        client_tokens={"alice": CLIENT_TOKEN},
        data_roots=[str(DATA)],
    )
    with served(settings) as api:
        hostile = random_template_set(tiny_spec())
        hostile.lineage.data_uri = HOSTILE
        api.app.state.services.store.publish(hostile, name="hostile")
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, api: Served) -> Iterator[Page]:
    """A new tab with axe-core loaded into every document (an init script: the page's CSP admits no inline one)
    and every CSP violation the console reports collected."""
    context = browser.new_context(base_url=api.url, accept_downloads=True)
    context.add_init_script(path=str(AXE))
    context.set_default_timeout(patient(30) * 1000)
    page = context.new_page()
    page.csp_violations = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda m: "Content Security Policy" in m.text and page.csp_violations.append(m.text),  # type: ignore[attr-defined]
    )
    yield page
    assert page.csp_violations == []  # type: ignore[attr-defined]
    context.close()


def accessible(page: Page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    found = page.evaluate("async () => (await axe.run(document)).violations.map(v => [v.id, v.impact, v.help])")
    assert [v for v in found if v[1] in ("serious", "critical")] == []


def with_tokens(page: Page, path: str) -> None:
    """Opens `path`; the first refused part opens the token form, which takes the tokens once for the tab."""
    page.goto(path)
    page.wait_for_selector("#tokens:not([hidden])")
    page.fill("#client-token", CLIENT_TOKEN)
    page.fill("#admin-token", ADMIN_TOKEN)
    page.press("#admin-token", "Enter")  # the keyboard submits it
    page.wait_for_selector("#tokens", state="hidden")


def test_the_catalogue_asks_for_the_token_once_and_the_demo_set_shows_its_card(page, api):
    with_tokens(page, "/")
    assert page.url == f"{api.url}/ui"
    rows = page.locator("#catalogue tbody tr")
    rows.first.wait_for()
    assert sorted(rows.locator("th").all_inner_texts()) == ["demo@1", "hostile@1"]
    accessible(page)
    page.click("text=demo@1")
    page.wait_for_url("**/ui/template-sets/demo%401")
    plot = page.locator("img.plot")
    plot.wait_for()
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG decoded
    card = httpx.get(f"{api.url}/v1/template-sets/demo@1/card", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert page.locator("section[aria-labelledby=card-title] tbody tr").count() == len(card.json()["rows"])
    assert page.locator("section[aria-labelledby=aliases-title] tbody th").all_inner_texts() == ["prod"]
    assert "template_set='demo@1'" in page.locator("pre[aria-label=Python]").inner_text()
    accessible(page)
    page.reload()  # the token is kept by the tab: asked for once
    page.locator("img.plot").wait_for()
    assert page.locator("#tokens").is_hidden()


def test_an_initialization_submitted_through_the_form_is_followed_live_and_downloaded(page, api, tmp_path):
    with_tokens(page, "/ui/new")
    fields = {"depth": 2, "embed_dim": 64, "num_heads": 1, "img_size": 28, "patch_size": 7, "in_chans": 1,
              "num_classes": 10, "max_samples": 128, "steps": 3}  # fmt: skip
    for name, value in fields.items():
        page.fill(f"input[name={name}]", str(value))
    page.fill("input[name=calibration]", f"idx://{DATA}/FashionMNIST")
    page.wait_for_function("() => document.querySelector('pre[aria-label=CLI]')?.innerText.includes('--steps 3')")
    assert "depth=2" in page.locator("pre[aria-label=CLI]").inner_text()
    accessible(page)
    page.click("#submit-initialization")
    page.wait_for_function(
        "() => location.pathname.startsWith('/ui/jobs/') || document.getElementById('submit-result')?.innerText"
        ".length > 12"
    )
    page.wait_for_load_state()
    assert "/ui/jobs/initialization/" in page.url, page.inner_text("#submit-result")
    job_id = page.url.rsplit("/", 1)[1]
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    page.wait_for_selector("#job-status[data-terminal=true]", timeout=patient(240) * 1000)
    assert page.inner_text("#job-status") == "succeeded"
    assert page.evaluate("() => window.sameDocument") is True
    accessible(page)
    with page.expect_download() as download:
        page.click("#checkpoint-download")
    saved = tmp_path / "model.safetensors"
    download.value.save_as(saved)
    sha256 = hashlib.sha256(saved.read_bytes()).hexdigest()
    job = httpx.get(f"{api.url}/v1/initializations/{job_id}", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert sha256 == job.json()["checkpoint"]["sha256"] == page.inner_text("#checkpoint-sha256")
    page.goto("/ui/jobs")
    row = page.locator("#jobs tbody tr", has_text=job_id[:12])
    row.wait_for()
    assert row.locator("td").all_inner_texts()[:2] == ["initialization", "succeeded"]
    assert "2 × 64" in row.inner_text() and "demo@1" in row.inner_text()
    accessible(page)


def test_text_a_client_controls_is_shown_as_text(page, api):
    with_tokens(page, "/ui/template-sets/hostile@1")
    shown = page.locator("section[aria-labelledby=lineage-title] dd", has_text="window.pwned")
    assert shown.first.inner_text() == HOSTILE
    assert page.locator("main script, main img[src=x]").count() == 0
    page.goto("/ui/template-sets/%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D3%3E")  # a ref no set can have
    page.wait_for_selector("#notice:not([hidden])")
    assert page.locator("#version h1").inner_text() == "<img src=x onerror=window.pwned=3>"
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_pages_fit_a_phone_and_alias_moves_answer_in_words(page, api):
    page.set_viewport_size({"width": 360, "height": 740})
    with_tokens(page, "/ui/template-sets/demo@1")
    page.locator("img.plot").wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360  # wide tables scroll in their region
    page.goto("/ui/admin")
    page.fill("#alias-form input[name=alias]", "staging")
    page.fill("#alias-form input[name=version]", "1")
    page.click("#alias-form button")
    page.wait_for_function("() => document.getElementById('alias-result').innerText.length > 0")
    assert page.inner_text("#alias-result") == "demo@staging now names version 1 (history 1)"
    page.fill("#alias-form input[name=name]", "nothing-here")
    page.click("#alias-form button")
    page.wait_for_function("() => !document.getElementById('alias-result').innerText.startsWith('demo@')")
    assert "nothing-here" in page.inner_text("#alias-result")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    accessible(page)
