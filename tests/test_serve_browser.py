"""The ``keymodels serve`` page in a real browser: headless Chromium, driven by Selenium.

The server runs in-process (uvicorn in a thread) over two tiny runs, an image ViT and a
translation Transformer; the tests click through the page as a person would and read back
what it shows. Screenshots land in ``runs/serve-browser/``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the tests fail (set
``KEYMODELS_SKIP_BROWSER=1`` to skip instead). Selenium is told never to download a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keymodels.cli import main
from test_cli_explain import write_run
from test_seq2seq_cli import TINY

SHOTS = Path(__file__).resolve().parents[1] / "runs" / "serve-browser"
DRIVER = "/usr/bin/chromedriver"
WAIT_S = 30

# Console errors a browser logs for every 4xx answer; the tests cause those on purpose.
EXPECTED_CONSOLE = ("Failed to load resource",)


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or a loud failure that says how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = DRIVER if Path(DRIVER).is_file() else shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p]
    reason = (
        f"browser test needs {' and '.join(missing)}: install them with "
        "`sudo apt-get install chromium chromium-driver` "
        "(or set KEYMODELS_SKIP_BROWSER=1 to skip the browser tests)"
    )
    if os.environ.get("KEYMODELS_SKIP_BROWSER") == "1":
        pytest.skip(reason)
    pytest.fail(reason, pytrace=False)


# ------------------------------------------------------------------ runs and server


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-browser")
    image = write_run(root / "vit-digits")
    translation = root / "copy-transformer"
    args = ["seq2seq", "train", *TINY, "--arch", "transformer", "--model", "transformer_tiny"]
    args += ["--vocab", "bpe", "--vocab-size", "14", "--joint-vocab", "--tie-embeddings", "all"]
    args += ["--schedule", "inverse_sqrt", "--warmup", "20", "--adam-beta2", "0.98"]
    assert main([*args, "--epochs", "1", "--train-size", "200", "--out", str(translation)]) == 0
    return {"image": image, "translation": translation}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(run_dirs):
    """The real app on a real server (a free port); yields its base URL and the runs it lists."""
    from keymodels.serve.app import create_app, running

    app = create_app([run_dirs["image"], run_dirs["translation"]])
    with running(app) as url:
        runs = get_json(f"{url}/api/runs")["runs"]
        yield {"url": url, "runs": {r["kind"]: r["name"] for r in runs}}


@pytest.fixture(scope="module")
def driver():
    """Headless Chromium; asked for before ``server`` so a missing browser fails before training."""
    chromium, chromedriver = browser_paths()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


# ------------------------------------------------------------------ page helpers


def wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message)


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, element_id)).select_by_value(value)


def open_run(driver, url: str, name: str, panel: str) -> None:
    """A fresh page, then ``name`` chosen in the run selector."""
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.getElementById('run').options.length"),
         "the run selector never filled")  # fmt: skip
    choose(driver, "run", name)
    wait(driver, lambda d: by_id(d, panel).is_displayed(), f"#{panel} never showed")
    wait(driver, lambda d: by_id(d, "card-name").text == name, "the model card never showed")


def attr(driver, element_id: str, name: str) -> str | None:
    return by_id(driver, element_id).get_attribute(name)


def canvas_pixels(driver) -> dict:
    """How many distinct colours the overlay shows, and its PNG, to tell drawings apart."""
    return driver.execute_script(
        """
        const c = document.getElementById('overlay');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length; i += 4) {
          seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
        return {distinct: seen.size, png: c.toDataURL()};
        """
    )


def wait_overlay(driver, **expected: str) -> None:
    """Until the overlay is drawn and shows ``expected`` (data-view="heads", ...)."""

    def ready(d):
        if attr(d, "overlay", "data-ready") != "1":
            return False
        return all(attr(d, "overlay", f"data-{k}") == v for k, v in expected.items())

    wait(driver, ready, f"the overlay was never drawn with {expected}")


def error_text(driver) -> str:
    wait(driver, lambda d: by_id(d, "error").is_displayed(), "#error never showed")
    return by_id(driver, "error").text


def error_hidden(driver) -> bool:
    return not by_id(driver, "error").is_displayed()


def screenshot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / name))


def unexpected_console_errors(driver) -> list[str]:
    logs = driver.get_log("browser")
    return [
        e["message"]
        for e in logs
        if e["level"] == "SEVERE" and not any(s in e["message"] for s in EXPECTED_CONSOLE)
    ]


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("pictures")
    digit = load_digits().images[0]  # 8×8, values 0..16
    png = root / "digit.png"
    Image.fromarray((digit * 255 / 16).round().astype(np.uint8)).save(png)
    broken = root / "broken.png"
    broken.write_text("this is text, not a PNG")
    return {"digit": png, "broken": broken}


def test_image_run_prediction_maps_patch_click_and_errors(driver, server, pictures):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_run(driver, server["url"], server["runs"]["image"], "image-panel")
    assert by_id(driver, "kind").text == "image"

    by_id(driver, "upload").send_keys(str(pictures["digit"]))
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#topk li"), "no top-k list")
    wait_overlay(driver, view="rollout")
    entries = driver.find_elements(By.CSS_SELECTOR, "#topk li")
    assert 1 <= len(entries) <= 10
    assert all(e.text.strip().endswith("%") for e in entries)
    rollout = canvas_pixels(driver)
    assert rollout["distinct"] > 4, "the overlay canvas is (nearly) uniform"

    # One layer's heads come from /predict's "heads": drawn locally, the attributes say which.
    choose(driver, "view", "heads")
    choose(driver, "layer", "1")
    choose(driver, "head", "1")
    wait_overlay(driver, view="heads", layer="1", head="1")
    heads = canvas_pixels(driver)
    assert heads["png"] != rollout["png"], "switching to layer 1 head 1 did not redraw"

    # A click on the canvas picks the patch under the cursor (offsets from the centre of the
    # 320-px, 4×4-patch canvas: x 40, y 120 → column 0, row 1 → row-major patch 4).
    canvas = by_id(driver, "overlay")
    assert canvas.size["width"] == 320
    ActionChains(driver).move_to_element_with_offset(canvas, -120, -40).click().perform()
    wait_overlay(driver, view="patch", patch="4")
    assert by_id(driver, "view").get_attribute("value") == "patch"
    assert canvas_pixels(driver)["png"] != heads["png"]
    assert error_hidden(driver)
    screenshot(driver, "image.png")

    # Gradient rollout asks /explain for a class of our choosing.
    choose(driver, "view", "grad-rollout")
    choose(driver, "class", "3")
    wait_overlay(driver, view="grad-rollout")
    assert "“3”" in by_id(driver, "map-caption").text

    # Text in a .png: the API's message shows in the banner, and the old result goes away.
    by_id(driver, "upload").send_keys(str(pictures["broken"]))
    message = error_text(driver)
    assert "image" in message.lower(), message
    assert not by_id(driver, "image-results").is_displayed()
    screenshot(driver, "image-error.png")

    # The next good request clears the banner.
    by_id(driver, "upload").send_keys(str(pictures["digit"]))
    wait_overlay(driver)
    wait(driver, error_hidden, "#error stayed after a successful prediction")
    assert unexpected_console_errors(driver) == []


def test_translation_run_alignment_hover_layers_and_errors(driver, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    name = server["runs"]["translation"]
    open_run(driver, server["url"], name, "translation-panel")
    assert by_id(driver, "kind").text == "translation"
    card = get_json(f"{server['url']}/api/runs/{name}")
    sentence = (card.get("examples") or ["1 2 3 4"])[0]
    assert by_id(driver, "beam").get_attribute("value") == "5"
    assert by_id(driver, "nbest").get_attribute("value") == "3"

    source = by_id(driver, "source")
    source.clear()
    source.send_keys(sentence)
    by_id(driver, "translate").click()
    wait(driver, lambda d: by_id(d, "translation").text.strip(), "no translation shown")
    cells = driver.find_elements(By.CSS_SELECTOR, "#alignment td")
    sources = driver.find_elements(By.CSS_SELECTOR, "#alignment th.src")
    targets = driver.find_elements(By.CSS_SELECTOR, "#alignment th.tgt")
    assert len(cells) == len(sources) * len(targets) > 0
    assert 1 <= len(driver.find_elements(By.CSS_SELECTOR, "#nbest-list li")) <= 3

    # Hovering a cell names its weight and lights up its target row and source column.
    row, col = 0, len(sources) - 1
    cell = driver.find_element(
        By.CSS_SELECTOR, f'#alignment td[data-row="{row}"][data-col="{col}"]'
    )
    ActionChains(driver).move_to_element(cell).perform()
    wait(driver, lambda d: "weight" in by_id(d, "hover-info").text, "no weight on hover")
    weight = float(by_id(driver, "hover-info").text.rsplit(" ", 1)[-1])
    assert weight == pytest.approx(float(cell.get_attribute("data-weight")), abs=1e-3)
    assert "hl" in targets[row].get_attribute("class").split()
    assert "hl" in sources[col].get_attribute("class").split()
    assert "hl" not in sources[0].get_attribute("class").split() or col == 0

    # Hovering a target token lights up its whole row.
    ActionChains(driver).move_to_element(targets[-1]).perform()
    last = len(targets) - 1
    wait(
        driver,
        lambda d: all(
            "hl" in c.get_attribute("class").split()
            for c in d.find_elements(By.CSS_SELECTOR, f'#alignment td[data-row="{last}"]')
        ),
        "hovering a target token did not highlight its row",
    )
    screenshot(driver, "translation.png")

    # A Transformer shows every layer and head; the matrix switches locally.
    assert card["arch"] == "transformer" and by_id(driver, "t-controls").is_displayed()
    mean = [c.get_attribute("data-weight") for c in cells]
    choose(driver, "t-layer", "0")
    choose(driver, "t-head", "1")
    wait(
        driver,
        lambda d: (
            (attr(d, "alignment", "data-layer"), attr(d, "alignment", "data-head")) == ("0", "1")
        ),
        "the alignment never switched to layer 0 head 1",
    )
    head = [
        c.get_attribute("data-weight")
        for c in driver.find_elements(By.CSS_SELECTOR, "#alignment td")
    ]
    assert len(head) == len(mean) and head != mean
    for r in range(len(targets)):  # still attention: each target row sums to 1
        row_sum = driver.execute_script(
            "return [...document.querySelectorAll(`#alignment td[data-row='${arguments[0]}']`)]"
            ".reduce((s, c) => s + Number(c.dataset.weight), 0)",
            r,
        )
        assert row_sum == pytest.approx(1.0, abs=1e-2)

    # An empty sentence: the API says why, the page shows it and hides the stale result.
    source.clear()
    by_id(driver, "translate").click()
    message = error_text(driver)
    assert "empty" in message, message
    assert not by_id(driver, "translation-results").is_displayed()
    screenshot(driver, "translation-error.png")
    source.send_keys(sentence)
    by_id(driver, "translate").click()
    wait(driver, error_hidden, "#error stayed after a successful translation")
    assert unexpected_console_errors(driver) == []
