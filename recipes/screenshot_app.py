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
    predicted classes shown, "clipped": the texts cut off by their box}."""
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
            # Labels cut off by their box: the text is wider than the element that shows it.
            # Texts cut off: a block's label covered by its block's buttons (Gradio lays them over the label's
            # right end) or running past the block, and any text wider than a box that hides its overflow.
            clipped = page.evaluate("""(() => {
                const visible = e => e.offsetParent !== null && e.innerText.trim();
                const overlap = (a, b) => b.width > 0 && b.left < a.right - 1 && b.right > a.left + 1
                                          && b.top < a.bottom - 1 && b.bottom > a.top + 1;
                const labels = Array.from(document.querySelectorAll('[data-testid="block-label"]')).filter(visible)
                    .filter(label => {
                        const range = document.createRange();
                        range.selectNodeContents(label);
                        const box = range.getBoundingClientRect();  // the text itself, not the label's padding
                        const block = label.closest('.block') || label.parentElement;
                        const buttons = Array.from(block.querySelectorAll('button'))  // the icon buttons
                            .filter(b => !label.contains(b)).map(b => b.getBoundingClientRect())
                            .filter(b => b.width <= 48 && b.height <= 48);
                        return buttons.some(b => overlap(box, b))
                               || box.right > block.getBoundingClientRect().right + 1;
                    });
                const texts = Array.from(document.querySelectorAll('label, span, button, h1, h2, p')).filter(visible)
                    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflow !== 'visible');
                return [...new Set([...labels, ...texts].map(e => e.innerText.trim()))];
            })()""")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            chromium.close()
    return {"button": box, "images": loaded, "labels": labels, "clipped": clipped}


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
    if view["clipped"]:
        print(f"texts cut off at {args.width} x {args.height}: {view['clipped']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
