"""The explorer as users meet it: launched on 127.0.0.1 and driven through gradio_client, by ten
clients at once, in headless Chromium, and from `demos/app.py`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sith_lens.demo import Workbench, launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app():
    demo = launch(Workbench("toy"), host="127.0.0.1", block=False, quiet=True)
    try:
        yield demo
    finally:
        demo.close()


@pytest.fixture
def client(app):
    from gradio_client import Client

    return Client(app.local_url, verbose=False)


def _upload(path, mode, size=(80, 60)):
    from gradio_client import handle_file

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8), "RGBA").convert(mode).save(path)
    return handle_file(str(path))


def test_every_tab_through_gradio_client(client, tmp_path):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) >= {
        "/init", "/head_view", "/concept_search", "/edit_view", "/export_edit", "/lucid_probe",
        "/init_features", "/feature_view", "/compare_view"}
    overview, spectrum, vectors, summary, suppress, _ = client.predict(api_name="/init")
    assert "L5 H0" in summary and len(vectors["data"]) == 16 and "red" in [c[0] for c in suppress["choices"]]
    spectrum, vectors, summary = client.predict(2, 4, api_name="/head_view")
    assert "L2 H4" in summary and vectors["headers"][0] == "vector"
    note, hits = client.predict("red", api_name="/concept_search")
    assert "**red**" in note and hits["data"]
    # Edit: colour words suppressed, an RGBA upload classified too
    summary, table, bars, gallery = client.predict(
        ["red", "blue"], [], 2, 0.5, "-4:", "a red object, a blue object, a green object",
        _upload(tmp_path / "rgba.png", "RGBA"), "color", api_name="/edit_view")
    assert "singular vectors in" in summary and table["data"][0][0] == "your image" and len(gallery) == 17
    zip_path = client.predict(["red"], [], 2, 0.5, "-4:", api_name="/export_edit")
    assert Path(zip_path).stat().st_size > 1_000_000 and zip_path.endswith(".zip")
    # LUCID: a sample scene, then a grayscale upload
    probe = client.predict(None, _sample_choice(client), "a red circle", api_name="/lucid_probe")
    preview, summary, latents, maps, tokens, token_table, plan, word_maps, features = probe
    assert Image.open(preview).size == (256, 256) and "shared latents fire" in summary  # 64 px shown at 4x
    assert [t["token"].strip() for t in tokens] == ["a", "red", "circle"] and maps and word_maps
    probe = client.predict(_upload(tmp_path / "gray.png", "L"), None, "a blue square", api_name="/lucid_probe")
    assert Image.open(probe[0]).mode == "RGB" and probe[2]["data"]
    feature, summary, patches, terms = client.predict(api_name="/init_features")
    assert "Latent **" in summary and patches
    summary, patches, terms = client.predict(feature["value"], api_name="/feature_view")
    assert "Latent **" in summary and terms["data"]
    # Compare: the edit of the Edit tab against the base
    summary, layers, change, heads = client.predict("edit", "", ["red"], [], 2, 0.5, "-4:", api_name="/compare_view")
    assert "heads changed" in summary and len(layers["data"]) == 6 and heads["data"]


def _sample_choice(client) -> str:
    for component in client.config["components"]:
        if component.get("props", {}).get("label") == "sample scene":
            return component["props"]["choices"][0][0]
    raise AssertionError("the LUCID tab has no sample dropdown")


def test_bad_input_gets_a_clear_message(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.txt"
    notes.write_text("no pixels here")
    with pytest.raises(AppError, match="notes.txt is not an image"):
        client.predict(handle_file(str(notes)), None, "a red circle", api_name="/lucid_probe")
    with pytest.raises(AppError, match="caption is empty"):
        client.predict(None, _sample_choice(client), " ", api_name="/lucid_probe")
    with pytest.raises(AppError, match="nothing to edit"):
        client.predict([], [], 2, 0.5, "-4:", "a red object, a blue object", None, "color", api_name="/edit_view")
    with pytest.raises(AppError, match="not an image"):
        client.predict(["red"], [], 2, 0.5, "-4:", "a red object, a blue object", handle_file(str(notes)), "color",
                       api_name="/edit_view")
    with pytest.raises(AppError, match="bad layers 'four'"):
        client.predict(["red"], [], 2, 0.5, "four", "a red object, a blue object", None, "color", api_name="/edit_view")
    with pytest.raises(AppError, match="99 is not in the list of choices"):  # Gradio checks dropdowns itself
        client.predict(2, 99, api_name="/head_view")


def test_uploads_over_the_size_limit_are_refused_by_the_server(app, client, tmp_path):
    """There was no limit: any client could fill the server's disk and memory with one upload."""
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(33 * 2**20)  # over MAX_UPLOAD (32 MB), sparse on disk
    assert client.config["max_file_size"] == 32 * 1024**2
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first
        client.predict(handle_file(str(big)), None, "a red circle", api_name="/lucid_probe")
    with open(big, "rb") as f:  # a client that skips that check meets the server's
        refused = httpx.post(app.local_url + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=60)
    assert refused.status_code == 413
    small = httpx.post(app.local_url + "gradio_api/upload", files={"files": ("s.png", b"x" * 100, "image/png")}, timeout=60)
    assert small.status_code == 200


def test_ten_concurrent_clients(app):
    from gradio_client import Client

    sample = _sample_choice(Client(app.local_url, verbose=False))

    def session(i: int) -> tuple[str, str]:
        c = Client(app.local_url, verbose=False)
        head = c.predict(i % 6, i % 8, api_name="/head_view")[2]
        probe = c.predict(None, sample, ["a red circle", "a blue square"][i % 2], api_name="/lucid_probe")[1]
        return head, probe

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(session, range(10)))
    assert [h.split("**")[1] for h, _ in results] == [f"L{i % 6} H{i % 8}" for i in range(10)]
    assert all("shared latents fire" in p for _, p in results)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_headless_chromium_renders_the_app(app, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("SITH_LENS_REQUIRE_CHROMIUM") == "1":
            pytest.fail("Chromium is required here (SITH_LENS_REQUIRE_CHROMIUM=1): apt-get install chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    shot = tmp_path / "app.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,1000",
         "--virtual-time-budget=15000", f"--screenshot={shot}", app.local_url],
        check=True, capture_output=True, timeout=180,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (1000, 1280, 3)
    assert pixels.std() > 10  # not one flat colour
    dark = (pixels.sum(-1) < 300).mean()  # text and widgets drawn on the white page
    assert 0.002 < dark < 0.5
    assert len(np.unique(pixels.reshape(-1, 3) // 16, axis=0)) > 20


def test_demos_app_script_serves_the_explorer(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "demos" / "app.py"), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 120, ""
        while time.time() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "sith-lens explorer" in page, proc.stdout.read() if proc.poll() is not None else "no page"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_demo_command_rejects_bad_options(capsys):
    from sith_lens.cli import main

    assert main(["demo", "--port", "70000"]) == 2
    assert "argument --port: must be a port in 1..65535" in capsys.readouterr().err
