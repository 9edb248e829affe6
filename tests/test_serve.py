from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

flask = pytest.importorskip("flask")

from loftr.cli import main  # noqa: E402
from loftr import serve  # noqa: E402
from loftr.serve import ServeOptions, create_app  # noqa: E402

from .conftest import photo  # noqa: E402

PHOTO0, PHOTO1 = "LightGlue__assets_sacre_coeur1.jpg", "LightGlue__assets_sacre_coeur2.jpg"
CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
               "--window-size=1200,1000")


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory) -> Path:
    """A folder with two real photos shrunk to at most 160 px."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name in (PHOTO0, PHOTO1):
        with Image.open(photo(name)) as im:
            im.thumbnail((160, 160))
            im.save(folder / name)
    (folder / "notes.txt").write_text("not a picture")
    return folder


@pytest.fixture(scope="module")
def app(weights_file: Path, small_photos: Path):
    return create_app(ServeOptions(weights=str(weights_file), max_size=160, images_dir=str(small_photos)))


def _upload(folder: Path, name: str) -> tuple[io.BytesIO, str]:
    return io.BytesIO((folder / name).read_bytes()), name


def _post(app, **fields):
    return app.test_client().post("/match", data=fields, content_type="multipart/form-data")


def _text(html: bytes, element_id: str) -> str | None:
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html.decode())
    return None if m is None else " ".join(m.group(1).split())


def test_index_offers_models_geometries_and_folder_pictures(app) -> None:
    r = app.test_client().get("/")
    html = r.data.decode()
    assert r.status_code == 200 and 'enctype="multipart/form-data"' in html
    models = re.findall(r"<option(?: selected)?>([^<]+)</option>", html.split('id="model"')[1].split("</select>")[0])
    assert models[0] == "file:tiny.safetensors" and "tiny_ds" in models  # the --weights file first, then bundled
    assert html.count(f"<option>{PHOTO0}</option>") == 2 and "notes.txt" not in html
    for g in ("none", "homography", "fundamental"):
        assert f">{g}</option>" in html


def test_match_uploads_with_homography_and_downloads(app, small_photos: Path) -> None:
    r = _post(app, image0=_upload(small_photos, PHOTO0), image1=_upload(small_photos, PHOTO1), threshold="0",
              geometry="homography")
    assert r.status_code == 200, _text(r.data, "error")
    count = int(_text(r.data, "count").split(": ")[1])
    assert count > 4
    rid = re.search(rb"/result/(\w+)/figure\.png", r.data).group(1).decode()
    client = app.test_client()
    png = client.get(f"/result/{rid}/figure.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(client.get(f"/result/{rid}/matches.json").data)
    assert len(data["keypoints0"]) == len(data["keypoints1"]) == len(data["confidence"]) == count
    assert data["geometry"] == "homography" and data["threshold"] == 0 and data["image0"] == PHOTO0
    inliers = sum(data["inliers"])
    assert _text(r.data, "inliers") == f"Inliers: {inliers} / {count} (homography)"
    # keypoints are in pixels of the uploaded images
    assert np.all(np.array(data["keypoints0"]) >= -0.5) and np.array(data["keypoints0"])[:, 0].max() < 160
    npz = np.load(io.BytesIO(client.get(f"/result/{rid}/matches.npz").data))
    assert npz["keypoints0"].shape == (count, 2) and npz["matrix"].shape == (3, 3)
    np.testing.assert_allclose(npz["keypoints1"], np.array(data["keypoints1"], dtype=np.float32))
    disposition = client.get(f"/result/{rid}/matches.npz").headers["Content-Disposition"]
    assert "attachment" in disposition and ".npz" in disposition


def test_folder_picks_without_geometry_and_model_cache(app) -> None:
    viewer = app.extensions["loftr"]
    r = _post(app, pick0=PHOTO0, pick1=PHOTO1, threshold="0", geometry="none", model="file:tiny.safetensors")
    assert r.status_code == 200 and _text(r.data, "inliers") is None and _text(r.data, "count").startswith("Matches")
    assert f'<option selected>{PHOTO0}</option>' in r.data.decode()  # the form keeps its choices
    rid = re.search(rb"/result/(\w+)/matches\.json", r.data).group(1).decode()
    assert "inliers" not in json.loads(app.test_client().get(f"/result/{rid}/matches.json").data)
    model = viewer.models.get("file:tiny.safetensors")
    _post(app, pick0=PHOTO0, pick1=PHOTO1, geometry="none")
    assert viewer.models.get("file:tiny.safetensors") is model
    assert viewer.models.get("tiny_ds") is not model  # another name, another model


def test_geometry_failure_is_a_note_not_an_error(app) -> None:
    r = _post(app, pick0=PHOTO0, pick1=PHOTO1, threshold="1", geometry="fundamental")
    assert r.status_code == 200 and _text(r.data, "count") == "Matches: 0"
    assert _text(r.data, "note") == "no fundamental found from 0 matches (needs at least 8 consistent ones)"


@pytest.mark.parametrize(
    "fields,expected",
    [
        (dict(pick1=PHOTO1), "image0: upload a file or pick one from the folder"),
        (dict(image0=(io.BytesIO(b"hello"), "x.jpg"), pick1=PHOTO1), "x.jpg is not an image"),
        (dict(pick0=PHOTO0, pick1=PHOTO1, threshold="abc"), "threshold must be a number between 0 and 1"),
        (dict(pick0=PHOTO0, pick1=PHOTO1, threshold="1.5"), "threshold must be between 0 and 1, got 1.5"),
        (dict(pick0=PHOTO0, pick1=PHOTO1, geometry="affine"), "geometric model must be one of"),
        (dict(pick0=PHOTO0, pick1=PHOTO1, model="outdoor_ot"), "unknown model &#39;outdoor_ot&#39;"),
        (dict(pick0="../tiny.safetensors", pick1=PHOTO1), "is not a picture of the folder"),
        (dict(pick0="notes.txt", pick1=PHOTO1), "is not a picture of the folder"),
    ],
)
def test_bad_input_is_shown_on_the_page(app, fields: dict, expected: str) -> None:
    r = _post(app, **fields)
    error = _text(r.data, "error")
    assert r.status_code == 400 and error is not None and expected in error, error
    assert "loftr-serve-" not in error and 'id="match-form"' in r.data.decode()


def test_unknown_results_and_too_large_uploads(app, small_photos: Path, monkeypatch) -> None:
    monkeypatch.setattr(serve, "MAX_RESULTS", 3)
    client = app.test_client()
    assert client.get("/result/nope/figure.png").status_code == 404
    r = _post(app, pick0=PHOTO0, pick1=PHOTO1, threshold="1")
    rid = re.search(rb"/result/(\w+)/matches\.json", r.data).group(1).decode()
    assert client.get(f"/result/{rid}/matches.csv").status_code == 404
    for _ in range(3):
        _post(app, pick0=PHOTO0, pick1=PHOTO1, threshold="1")
    assert client.get(f"/result/{rid}/matches.json").status_code == 404  # only the last few are kept
    small = create_app(ServeOptions(weights=app.extensions["loftr"].options.weights, max_size=160))
    small.config["MAX_CONTENT_LENGTH"] = 1000
    r = _post(small, image0=_upload(small_photos, PHOTO0), image1=_upload(small_photos, PHOTO1))
    assert r.status_code == 413 and "the upload is too large" in _text(r.data, "error")


def test_cli_errors_are_one_line(weights_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["serve", "--weights", str(weights_file), "--images", str(tmp_path / "none")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--weights", str(weights_file), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def test_cli_serve_starts_and_answers(weights_file: Path, small_photos: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-u", "-m", "loftr.cli", "serve", "--port", "0", "--weights", str(weights_file),
           "--images", str(small_photos)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url and "model file:tiny.safetensors" in line, line
        with urllib.request.urlopen(url.group(0), timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "<h1>LoFTR viewer</h1>" in page and PHOTO1 in page
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


# ------------------------------------------------------------------------------------------ headless Chromium
def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("chromium / chromedriver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def server(app):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def test_browser_upload_match_and_download(server: str, small_photos: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _chromium()
    try:
        browser.set_script_timeout(30)
        browser.get(server + "/")
        assert browser.title == "LoFTR viewer"
        browser.find_element(By.ID, "submit").click()  # nothing chosen: an error on the page
        wait = WebDriverWait(browser, 60)
        error = wait.until(lambda b: b.find_elements(By.ID, "error"))[0].text
        assert error.startswith("image0: upload a file")

        browser.find_element(By.ID, "image0").send_keys(str(small_photos / PHOTO0))
        browser.find_element(By.ID, "image1").send_keys(str(small_photos / PHOTO1))
        threshold = browser.find_element(By.ID, "threshold")
        threshold.clear()
        threshold.send_keys("0")
        Select(browser.find_element(By.ID, "geometry")).select_by_visible_text("homography")
        browser.find_element(By.ID, "submit").click()
        count_text = wait.until(lambda b: b.find_elements(By.ID, "count"))[0].text
        count = int(re.fullmatch(r"Matches: (\d+)", count_text).group(1))
        assert count > 4 and not browser.find_elements(By.ID, "error")
        assert re.fullmatch(rf"Inliers: \d+ / {count} \(homography\)", browser.find_element(By.ID, "inliers").text)
        shown = wait.until(lambda b: b.execute_script(
            "const i = document.getElementById('figure'); return i.complete && i.naturalWidth;"))
        assert shown > 200  # both images side by side, each ≤ 160 px
        href = browser.find_element(By.ID, "download-json").get_attribute("href")
        data = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(r => r.json()).then(done, e => done(String(e)));", href)
        assert isinstance(data, dict) and len(data["keypoints0"]) == count
        assert browser.find_element(By.ID, "inliers").text.startswith(f"Inliers: {sum(data['inliers'])} /")
        browser.save_screenshot(str(tmp_path / "serve.png"))
        browser.save_screenshot("/tmp/serve_screenshot.png")
        assert (tmp_path / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        browser.quit()
