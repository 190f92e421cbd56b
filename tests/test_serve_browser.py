"""The demo page in a real browser (headless Chromium through Selenium): upload an ICDAR 2015 image,
wait for the overlay, and check that the page shows as many boxes as the API returns."""

import os
import shutil

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_serve import running  # noqa: E402

import dbdetect  # noqa: E402
from dbdetect.serve import ServeSettings  # noqa: E402
from dbdetect.serve.engine import Engine  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
# pixels of the demo page's box colour (#00e676) on its canvas
COUNT_GREEN = """
const c = document.getElementById('view');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] === 0 && d[i + 1] === 230 && d[i + 2] === 118) n++;
return n;
"""


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("DBDETECT_TEST_INSTALLED"):  # CI installs them: there, their absence is a failure
            pytest.fail("headless Chromium and chromedriver are missing in CI")
        pytest.skip("headless Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_demo_page_draws_the_boxes_the_api_returns(browser, ic15, tmp_path):
    image = ic15 / "test" / "images" / "img_108.jpg"
    det = dbdetect.Detector("ppocrv4", num_threads=2)
    with running(ServeSettings(), Engine(det)) as client:
        browser.get(str(client.base_url) + "/")
        browser.find_element(By.ID, "file").send_keys(str(image))
        count = WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.ID, "count").get_attribute("data-count") or None
        )
        api = client.post(
            "/v1/detect", params={"thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.6}, content=image.read_bytes()
        ).json()
        assert int(count) == len(api["detections"]) > 0
        width = browser.execute_script("return document.getElementById('view').width")
        assert width == api["width"]
        # the overlay is drawn: the canvas holds the detection colour somewhere
        green = browser.execute_script(COUNT_GREEN)
        assert green > 100
        # moving a threshold asks again and redraws
        browser.execute_script(
            "const s = document.getElementById('box_thresh'); s.value = 0.95; s.dispatchEvent(new Event('input'));"
        )
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "count").get_attribute("data-count") != count)
        browser.save_screenshot(str(tmp_path / "demo.png"))
        assert (tmp_path / "demo.png").stat().st_size > 10_000
