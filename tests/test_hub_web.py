"""The hub's web pages in a real browser (headless Chromium via Selenium), on loopback.

A tiny Gemma 4 run is published (signed, gated, with an eval report and a card carrying a
`<script>`, `javascript:` links and remote images); the browser searches for it, opens its
page, reads its evaluation, loss curve, fits and signature state, logs in with a token and
rates it; the card is checked inert in the DOM. Screenshots land in test-artifacts/.
Also: reports reach `hub admin reports` and an admin yanks from there; deprecation notes;
pull counts; fits recomputed when a base is added; cross-site form posts refused.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import requests
from typer.testing import CliRunner

from browser import browser, screenshot  # noqa: F401 (browser is a fixture)
from gemmaforge.cli import app as cli_app
from gemmaforge.hub.client.publish import publish
from gemmaforge.hub.server import Settings
from gemmaforge.hub.web.render import card_html, loss_svg
from hub_support import BASE_ID, BASE_REVISION, HubServer, set_up_publisher, train_tiny

EVIL = """
## Safety section

<script>alert('card script')</script>

<img src="https://evil.example/track.png" onerror="alert('img')">

[click me](javascript:alert('link')) and [also](JaVaScRiPt:alert(1)) and [data](data:text/html,x)

![remote](https://evil.example/pixel.png)

<a href="javascript:alert('raw')">raw link</a>

| metric | value |
| --- | --- |
| exact_match | 0.93 |
"""

EVAL_REPORT = {
    "run": "receipts",
    "task": "extract",
    "base_model": BASE_ID,
    "base_sha256": "0" * 64,
    "data": "eval.jsonl",
    "examples_scored": 8,
    "max_new_tokens": 32,
    "metrics": {
        "base": {"exact_match": 0.125, "field_f1": 0.4},
        "adapter": {"exact_match": 0.93, "field_f1": 0.97},
    },
    "examples": [{"prompt": "r1", "reference": "a", "base": "b", "adapter": "a"}],
}


def test_card_markdown_is_sanitised():
    html = card_html("---\nlicense: mit\n---\n# Title\n" + EVIL)
    assert "<h1>Title</h1>" in html
    assert "license: mit" not in html  # front matter is metadata, not card text
    assert "<script" not in html.lower()  # raw HTML is shown as text: &lt;script&gt;
    assert "&lt;script&gt;" in html
    tags = _tags(html)
    hrefs = [attrs.get("href", "") for tag, attrs in tags if tag == "a"]
    assert hrefs == ["https://evil.example/pixel.png"]  # the only real link left
    assert not [tag for tag, _ in tags if tag in ("img", "script", "iframe", "style")]
    # A remote image becomes a link the reader may follow; nothing is fetched.
    assert re.search(r'<a href="https://evil.example/pixel.png"[^>]*>\[image: remote\]</a>', html)
    assert "<table>" in html  # tables still render
    assert 'rel="nofollow noopener noreferrer"' in html


def _tags(html: str) -> list[tuple[str, dict]]:
    """Every element the HTML really contains (text that looks like a tag is not one)."""
    from html.parser import HTMLParser

    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collect().feed(html)
    return found


def test_loss_svg():
    points = [{"step": s, "loss": 3.0 / s} for s in range(1, 11)]
    points[-1]["eval_loss"] = 0.5
    svg = loss_svg(points)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert loss_svg([]) is None
    assert loss_svg([{"step": 1, "loss": float("nan")}]) is None


@pytest.fixture(scope="module")
def site(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hubweb")
    run = train_tiny(tiny_dir("gemma4"), tmp_path_factory.getbasetemp() / "hub-run-gemma4")
    # Our own copy of the shared run, with an eval report and a hostile card section.
    mine = tmp / "receipts-run"
    shutil.copytree(run, mine)
    card = mine / "README.md"
    card.write_text(card.read_text("utf-8") + EVIL)
    (mine / "eval").mkdir(exist_ok=True)
    (mine / "eval" / "report.json").write_text(json.dumps(EVAL_REPORT))

    server = HubServer(Settings(root=tmp / "hub"), web=True)
    owner = set_up_publisher(
        server.url, server.token("clinic"), "clinic", tmp / "keys", tiny_dir("gemma4")
    )
    client = owner.client()
    publish(client, mine, "clinic/receipts", "v1", owner.private, "gemma", "finance")
    publish(client, mine, "clinic/receipts", "v2", owner.private, "gemma", "finance")
    yield {
        "server": server,
        "owner": owner,
        "reader": server.token("reader"),
        "root": tmp / "hub",
        "run": mine,
        "tmp": tmp,
    }
    server.stop()


def _submit(driver, button_id: str) -> None:
    """Click a form's submit button and wait for the page it leads to."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    button = driver.find_element(By.ID, button_id)
    button.click()
    WebDriverWait(driver, 20).until(expected_conditions.staleness_of(button))


def _install_alert_spy(driver):
    """Every page from now on records alert/confirm/prompt calls in window.__alerts."""
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__alerts = [];"
            "for (const f of ['alert', 'confirm', 'prompt'])"
            "  window[f] = (m) => { window.__alerts.push(String(m)); };"
        },
    )


def test_browse_search_open_rate(site, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url = site["server"].url
    _install_alert_spy(browser)
    browser.set_window_size(1280, 1000)
    browser.get(f"{url}/")
    assert "clinic/receipts" in browser.find_element(By.ID, "newest").text
    # Search from the box on the home page.
    box = browser.find_element(By.NAME, "q")
    box.send_keys("receipts")
    box.submit()
    results = browser.find_element(By.ID, "results")
    assert "clinic/receipts" in results.text
    screenshot(browser, "hub-search")
    results.find_element(By.LINK_TEXT, "clinic/receipts").click()
    assert browser.current_url.endswith("/clinic/receipts")
    # Evaluation (self-reported), signature state, fits, loss curve, files, commands.
    evaluation = browser.find_element(By.ID, "evaluation").text
    assert "self-reported" in evaluation
    assert re.search(r"exact_match\s+0\.125\s+0\.930", evaluation), evaluation
    signature = browser.find_element(By.ID, "signature").text
    assert "Signature verified" in signature and "clinic" in signature
    fingerprint = site["owner"].client().version("clinic", "receipts", "v2")["key_fingerprint"]
    assert fingerprint[:24] in signature
    fits = browser.find_element(By.ID, "fits").text
    assert f"{BASE_ID}@{BASE_REVISION}" in fits and "yes" in fits
    assert browser.find_elements(By.CSS_SELECTOR, "#loss svg polyline")
    assert "adapter_model.safetensors" in browser.find_element(By.ID, "files").text
    commands = browser.find_element(By.ID, "commands").text
    assert "gemmaforge hub pull clinic/receipts@v2" in commands
    assert "--adapter hub://clinic/receipts@v2" in commands
    data = browser.find_element(By.ID, "data-files").text
    assert re.search(r"train\.jsonl\s+16\s+messages\s+sha256:[0-9a-f]{16}", data), data
    assert "/tmp/" not in browser.find_element(By.ID, "provenance").text  # no local paths
    assert "rows read 16" in browser.find_element(By.ID, "data-counts").text
    screenshot(browser, "hub-adapter")

    # Log in with a token, rate, then edit the rating (one per user per version).
    browser.get(f"{url}/-/login")
    browser.find_element(By.ID, "token").send_keys(site["reader"])
    _submit(browser, "login-submit")
    assert "signed in as reader" in browser.find_element(By.TAG_NAME, "header").text
    browser.get(f"{url}/clinic/receipts")
    Select(browser.find_element(By.ID, "stars")).select_by_value("4")
    browser.find_element(By.ID, "review").send_keys("Reads my receipts well.")
    _submit(browser, "rate-submit")
    ratings = browser.find_element(By.ID, "ratings").text
    assert "reader" in ratings and "Reads my receipts well." in ratings
    Select(browser.find_element(By.ID, "stars")).select_by_value("5")
    _submit(browser, "rate-submit")
    data = site["owner"].client().version("clinic", "receipts", "v2")
    assert [(r["user"], r["stars"]) for r in data["ratings"]] == [("reader", 5)]
    assert data["rating"] == 5
    assert "★ 5" in browser.find_element(By.ID, "rating").text
    screenshot(browser, "hub-rated")

    # Phone width: nothing wider than the screen.
    browser.set_window_size(390, 844)
    browser.get(f"{url}/clinic/receipts")
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 1, overflow
    screenshot(browser, "hub-adapter-phone")
    browser.get(f"{url}/search?q=receipts")
    assert (
        browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        <= 1
    )
    screenshot(browser, "hub-search-phone")
    browser.set_window_size(1280, 1000)
    assert browser.execute_script("return window.__alerts") == []


def test_hostile_card_renders_inert(site, browser):  # noqa: F811
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _install_alert_spy(browser)
    browser.get(f"{site['server'].url}/clinic/receipts/tree/v1")
    card = browser.find_element(By.ID, "card")
    assert "Safety section" in card.text
    # The page ships no script at all, so any script element would have come from a card.
    assert browser.find_elements(By.TAG_NAME, "script") == []
    hrefs = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
    assert not [h for h in hrefs if h.lower().strip().startswith(("javascript:", "data:"))]
    images = browser.find_elements(By.TAG_NAME, "img")
    assert not [i for i in images if (i.get_attribute("src") or "").startswith("http")]
    assert "https://evil.example/pixel.png" in hrefs  # shown as a link instead
    # The script text is shown as text, not run.
    assert "alert('card script')" in card.text or "<script>" in card.text
    assert browser.execute_script("return window.__alerts") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    screenshot(browser, "hub-hostile-card")


def test_report_admin_yank_deprecate_and_pulls(site):
    owner, url = site["owner"], site["server"].url
    reader = owner.client(site["reader"])
    assert reader.report("clinic", "receipts", "v1", "Leaks training rows in replies.")["id"]
    # The admin, on the server machine, sees it and yanks from it.
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["hub", "admin", "reports", "--root", str(site["root"])])
    assert listed.exit_code == 0, listed.output
    assert "clinic/receipts@v1" in listed.output and "Leaks training rows" in listed.output
    yanked = runner.invoke(
        cli_app,
        [
            "hub",
            "admin",
            "yank",
            "clinic/receipts@v1",
            "--reason",
            "leaks",
            "--root",
            str(site["root"]),
        ],
    )
    assert yanked.exit_code == 0, yanked.output
    after = runner.invoke(cli_app, ["hub", "admin", "reports", "--root", str(site["root"])])
    assert "No open reports." in after.output
    page = requests.get(f"{url}/clinic/receipts/tree/v1", timeout=30).text
    assert "Yanked: leaks" in page

    # Deprecation note pointing to the newer version (only the owner may set it).
    refused = requests.post(
        f"{url}/api/adapters/clinic/receipts/versions/v1/deprecate",
        json={"note": "x"},
        headers={"Authorization": f"Bearer {site['reader']}"},
        timeout=30,
    )
    assert refused.status_code == 403
    owner.client().deprecate("clinic", "receipts", "v1", "Superseded: better recall.", "v2")
    page = requests.get(f"{url}/clinic/receipts/tree/v1", timeout=30).text
    assert "Deprecated: Superseded: better recall." in page
    assert 'href="/clinic/receipts/tree/v2"' in page

    # Pull counts: an API pull and a Hugging Face client file read both count.
    before = owner.client().version("clinic", "receipts", "v2")["adapter_pulls"]
    owner.client().version("clinic", "receipts", "v2", pull=True)
    requests.get(f"{url}/clinic/receipts/resolve/v2/adapter_config.json", timeout=30)
    assert owner.client().version("clinic", "receipts", "v2")["adapter_pulls"] == before + 2
    assert "clinic/receipts" in requests.get(f"{url}/clinic", timeout=30).text


def test_fits_recomputed_when_a_base_is_added(site, tiny_dir):
    from gemmaforge.hub import bases

    client = site["owner"].client()
    newer = "fedcba9876543210fedcba9876543210fedcba98"
    for path, revision in ((tiny_dir("gemma4"), newer), (tiny_dir("gemma3"), "1" * 40)):
        record = bases.read_base(
            path, BASE_ID if revision == newer else "tiny/g3", revision, "gemma"
        )
        data = record.to_json()
        client.add_base(json.loads(data) if isinstance(data, str) else data)
    fits = {f["base"]: f["fits"] for f in client.version("clinic", "receipts", "v2")["fits"]}
    assert fits == {
        f"{BASE_ID}@{BASE_REVISION}": True,
        f"{BASE_ID}@{newer}": True,  # trained on one revision, fits the newer one
        f"tiny/g3@{'1' * 40}": False,
    }
    found = client.search(None, fits=f"{BASE_ID}@{newer}")
    assert [r["name"] for r in found] == ["clinic/receipts"]
    assert client.search(None, fits=f"tiny/g3@{'1' * 40}") == []


def test_forms_refuse_cross_site_posts_and_anonymous_rating(site):
    url = site["server"].url
    cookie = {"gemmaforge_hub_token": site["reader"]}
    form = {"stars": "1", "review": "forged"}
    evil = requests.post(
        f"{url}/clinic/receipts/tree/v2/rate",
        data=form,
        cookies=cookie,
        headers={"Origin": "http://evil.example"},
        timeout=30,
        allow_redirects=False,
    )
    assert evil.status_code == 403
    no_origin = requests.post(
        f"{url}/clinic/receipts/tree/v2/rate", data=form, cookies=cookie, timeout=30
    )
    assert no_origin.status_code == 403
    anonymous = requests.post(
        f"{url}/clinic/receipts/tree/v2/rate",
        data=form,
        headers={"Origin": url},
        timeout=30,
        allow_redirects=False,
    )
    assert anonymous.status_code == 401
    ratings = site["owner"].client().version("clinic", "receipts", "v2")["ratings"]
    assert all(r["review"] != "forged" for r in ratings)
