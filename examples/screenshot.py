"""Screenshot of an HTML page (e.g. an ``oodflow report``) in the system's headless Chromium.

Usage: python examples/screenshot.py PAGE.html OUT.png [WIDTH]

Prints the console messages and requests the page made (a report makes none but itself); the PNG
is reduced to a 256-colour palette to keep it small.
"""

import io
import shutil
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update"]


def main(page_file: str, out: str, width: int = 1280) -> None:
    with sync_playwright() as p:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": 800})
        seen = []
        page.on("console", lambda m: seen.append(f"console {m.type}: {m.text}"))
        page.on("request", lambda r: seen.append(f"request: {r.url}"))
        page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
        png = page.screenshot(full_page=True)
        browser.close()
    rgb = Image.open(io.BytesIO(png)).convert("RGB")  # octree without dithering keeps the few UI colours exact
    rgb.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)
    print("\n".join(seen), file=sys.stderr)
    print(f"{out}: {Image.open(out).size[0]}x{Image.open(out).size[1]} px", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
