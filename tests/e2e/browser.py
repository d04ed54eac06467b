"""Drive the head explorer in headless Chromium (Debian's ``chromium``) with Playwright, as a person
would: open it from disk with the network blocked, look at the map, open a head's card, follow a
link to another model's head, take a screenshot. Used by ``tests/e2e/test_e2e_dvc.py``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# the flags that keep Chromium from phoning home on a closed network (and let it run as root in CI)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium_path() -> str | None:
    """The system Chromium (``ATTENDOME_CHROMIUM`` overrides), or None."""
    for cand in (os.environ.get("ATTENDOME_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                 "/usr/bin/chromium"):
        if cand and Path(cand).exists():
            return cand
    return None


def drive_explorer(site: Path, screenshot_dir: Path) -> dict:
    """Open ``site/index.html`` and use it; returns what was seen.

    Returns:
        ``{"requests": every URL the page asked for, "outside": those not under the site's folder
        (blocked), "errors": page errors, "n_points": heads drawn on the map, "n_heads": heads in the
        page's data, "count_text", "card": the first card's head, "nearest": its nearest-head links,
        "followed": the head whose card the first link opened, "linked": that link's target,
        "screenshots": paths}``.
    """
    from playwright.sync_api import sync_playwright

    base = site.resolve().as_uri() + "/"
    seen: dict = {"requests": [], "outside": [], "errors": [], "screenshots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1500, "height": 1000}, service_workers="block")

        def gate(route):  # every non-file request: recorded and refused
            seen["outside"].append(route.request.url)
            route.abort()

        ctx.route("http*://**/*", gate)
        ctx.route("ws*://**/*", gate)
        page = ctx.new_page()
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
        page.goto(base + "index.html")
        page.wait_for_selector("#map svg .head")
        seen["n_points"] = page.locator("#map svg .head").count()
        seen["n_heads"] = page.evaluate("window.ATTENDOME.heads.length")
        seen["count_text"] = page.locator("#count").inner_text()
        # a typed head of a real model if there is one (its card has nearest heads)
        target = page.evaluate("""() => {
            const D = window.ATTENDOME;
            const i = D.heads.findIndex(h => !h.control && h.type !== 'untyped');
            return i >= 0 ? i : D.heads.findIndex(h => !h.control);
        }""")
        page.locator(f"#map svg .head[data-index='{target}']").dispatch_event("click")
        page.wait_for_selector("#card h2")
        page.wait_for_selector("#card .heat canvas")
        seen["card"] = page.locator("#card").get_attribute("data-head")
        links = page.locator("#card table.nearest a")
        seen["nearest"] = [links.nth(i).inner_text() for i in range(links.count())]
        shot = screenshot_dir / "explorer_card.png"
        page.screenshot(path=str(shot), full_page=False)
        seen["screenshots"].append(shot)
        if seen["nearest"]:
            seen["linked"] = links.first.get_attribute("href").split("head=", 1)[1]
            links.first.click()
            page.wait_for_function("(h) => document.querySelector('#card').dataset.head === h", arg=seen["linked"])
            page.wait_for_selector("#card .heat canvas")
            seen["followed"] = page.locator("#card").get_attribute("data-head")
        for tab in ("atlas", "leaderboard"):
            page.locator(f"#tabs button[data-tab='{tab}']").click()
            shot = screenshot_dir / f"explorer_{tab}.png"
            page.screenshot(path=str(shot), full_page=False)
            seen["screenshots"].append(shot)
        seen["n_tables"] = page.locator("#leaderboard table").count()
        page.locator("#leaderboard th.sortable").nth(1).click()  # sort by mAP: must not break the page
        browser.close()
    seen["outside"] += [u for u in seen["requests"] if not u.startswith(base)]
    return seen
