"""report.html in a real browser (headless Chromium): every inlined image decodes, every table
renders, and a screenshot of the page is not blank. Needs the Debian package `chromium`."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hdml.report import render
from test_aggregate import aggregate_all
from test_tsne import write_maps

# Added to a copy of the page only: after `load`, write what the browser made of it into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const tables = [...document.querySelectorAll("table")].map(t => ({
    id: t.id, rows: t.rows.length, width: t.getBoundingClientRect().width}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, tables, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium not found: install the Debian package `chromium` "
                    "(apt-get install --no-install-recommends chromium); this test must not be skipped")
    return found


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_report_renders_in_chromium(tmp_path):
    chromium()  # fail first, and clearly, where the browser is missing
    out = aggregate_all(tmp_path / "results")
    page = render(out["metrics"], tmp_path / "report", out["curves"], out["runs"], out["costs"],
                  write_maps(tmp_path / "results"))
    source = page.read_text()
    expected_tables = re.findall(r'<table class="results" id="([^"]+)"', source)
    expected_images = source.count("<img ")
    assert expected_images == 8 and len(expected_tables) >= 10

    probe_page = tmp_path / "report" / "probe.html"
    probe_page.write_text(source.replace("</body>", PROBE + "\n</body>"))
    dom = run_chromium(tmp_path / "profile", "--dump-dom", probe_page.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page's load handler did not run; DOM starts {dom[:500]!r}"
    state = json.loads(unescape(found.group(1)))

    assert len(state["images"]) == expected_images
    for i, img in enumerate(state["images"]):
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, f"image {i} did not load: {img}"
    assert [t["id"] for t in state["tables"]] == expected_tables
    for t in state["tables"]:
        assert t["rows"] >= 2 and t["width"] > 0, t

    height = min(int(state["height"]), 7000)
    shot = tmp_path / "report.png"
    run_chromium(tmp_path / "profile", f"--screenshot={shot}", f"--window-size=1400,{height}", page.as_uri())
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (height, 1400, 3)
    ink = (image < 200).any(axis=2)  # not near-white
    assert ink.mean() > 0.02, "screenshot is (nearly) blank"
    assert len(np.unique(image.reshape(-1, 3)[::7], axis=0)) > 200, "screenshot has too few colours for figures"
    red = (image[..., 0] > 150) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert red.sum() > 50, "no red 'best' marks rendered"
