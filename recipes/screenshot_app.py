"""Screenshot the web demo (`impure app`) in headless Chromium, as a visitor's first view, for the docs.

    python recipes/screenshot_app.py [--out docs/images/app.png] [--width 1400] [--height 1000]

It serves the app on a free local port, opens it at WIDTH x HEIGHT without scrolling, waits for the worked
example's four images, checks that the "Attack and purify" button lies inside the window, and saves the
screenshot. Needs the app extra, the `playwright` Python package and a Chromium on PATH (`chromium`,
`chromium-browser` or `google-chrome`; Debian: `apt-get install chromium`); no browser is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BUTTON = "Attack and purify"


def find_chromium() -> str | None:
    """The path of a Chromium-like browser on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_view(url: str, out: Path, *, width: int = 1400, height: int = 1000, browser: str | None = None
               ) -> dict[str, Any]:
    """Open `url` in headless Chromium at width x height, wait for the page's images, save a screenshot of the
    window (no scrolling) to `out`, and return what a visitor sees first: {"button": the run button's box
    (x, y, width, height) in window pixels, "images": how many result images have loaded, "labels": the
    predicted classes shown}."""
    from playwright.sync_api import sync_playwright

    executable = browser or find_chromium()
    if executable is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)})")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": width, "height": height})
            page.goto(url, wait_until="networkidle")
            page.wait_for_function("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0)"
                                   ".length >= 4", timeout=60_000)
            box = page.get_by_role("button", name=BUTTON).bounding_box()
            loaded = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth >= 224)"
                                   ".length")
            labels = page.locator("h2.output-class").all_inner_texts()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            chromium.close()
    return {"button": box, "images": loaded, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/app.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    from impure.app import serve

    port = free_port()
    app = serve("127.0.0.1", port, block=False)
    try:
        view = first_view(f"http://127.0.0.1:{port}/", args.out, width=args.width, height=args.height)
    finally:
        app.close()
    print(f"wrote {args.out}: {view}")
    button = view["button"]
    if button is None or button["y"] + button["height"] > args.height:
        print(f"the {BUTTON!r} button is not inside the first {args.height} pixels", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
