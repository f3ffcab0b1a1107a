"""Open built pages in headless Chromium: console errors, images shown, a screenshot each.

Used by the tests and by ``make demo``/``make docs`` to look at what a student and an instructor
will see. One browser serves every page; it is driven over the DevTools protocol on a loopback
port (tornado, which Jupyter brings, is the websocket client). Debian's ``chromium`` package is
what the Makefile installs; :func:`find_chromium` also honours ``GRADHEALTH_CHROMIUM``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradhealth._internal.io import atomic_write_bytes

__all__ = [
    "CHROMIUM_NAMES",
    "DECK_SETTLE_S",
    "LOAD_TIMEOUT_S",
    "MAX_FIGURE_SHOTS",
    "SETTLE_S",
    "VIEWPORT",
    "PageCheck",
    "check_pages",
    "find_chromium",
]

#: Executables tried, in order, after ``$GRADHEALTH_CHROMIUM``.
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: Seconds a page may take to fire its load event (MathJax and require.js load from disk).
LOAD_TIMEOUT_S = 60.0
#: Seconds to wait after the load event for scripts that run late (MathJax typesetting,
#: reveal.js layout) to report their errors.
SETTLE_S = 1.5
#: Seconds a deck takes to show the slide it moved to (reveal.js's slide transition).
DECK_SETTLE_S = 2.0
#: At most this many figures of one page are saved as PNGs of their own.
MAX_FIGURE_SHOTS = 20
#: Screenshot size in CSS pixels: a laptop screen, the projector of a lecture hall.
VIEWPORT: tuple[int, int] = (1280, 900)

# Count the images on the page and whether each decoded; then scroll the first figure into
# view so the screenshot shows it (a notebook's first screen is usually its title).
_INSPECT = """(() => {
  const imgs = Array.from(document.images);
  const shown = imgs.filter(i => i.complete && i.naturalWidth > 0);
  const first = shown.find(i => i.naturalWidth >= 100);
  const deck = document.querySelector('.reveal');
  if (first && !deck) first.scrollIntoView({block: 'center'});
  if (first && deck) {  // show the first slide with a figure (reveal.js routes on the hash)
    const tops = Array.from(document.querySelectorAll('.reveal .slides > section'));
    const at = tops.findIndex(s => s.contains(first));
    if (at > 0) location.hash = '#/' + at;
  }
  const figures = deck ? [] : shown.filter(i => i.naturalWidth >= 100).map(i => {
    const r = i.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
  });
  return {images: imgs.length, shown: shown.length, title: document.title, figures: figures,
          slides: deck ? document.querySelectorAll('.reveal .slides > section').length : -1,
          deck_ready: deck ? deck.classList.contains('ready') : null};
})()"""


@dataclass
class PageCheck:
    """What headless Chromium saw on one page.

    Attributes:
        page: The file that was opened.
        errors: Console errors, uncaught exceptions and failed loads, one line each.
        images: ``<img>`` elements on the page.
        shown: Those that loaded and decoded (natural width > 0).
        title: The page title.
        slides: Top-level reveal.js slides (-1 on a page that is not a deck).
        screenshot: The PNG written (the screen around the page's first figure), or None.
        figures: One PNG per figure of a page (not of a deck), in page order.
    """

    page: Path
    errors: list[str] = field(default_factory=list)
    images: int = 0
    shown: int = 0
    title: str = ""
    slides: int = -1
    screenshot: Path | None = None
    figures: list[Path] = field(default_factory=list)


def find_chromium() -> str | None:
    """The Chromium executable to use, or None when none is installed."""
    named = os.environ.get("GRADHEALTH_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class _DevTools:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.ws.read_message()
            if message is None:
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError("Chromium closed the DevTools socket"))
                return
            data = json.loads(message)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.write_message(json.dumps({"id": self.next_id, "method": method,
                                                "params": params}))
        data = await asyncio.wait_for(fut, LOAD_TIMEOUT_S)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def wait_for(self, method: str, since: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events[since:]):
                return True
            await asyncio.sleep(0.05)
        return False


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            found.append(f"uncaught: {text.splitlines()[0] if text else d}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            found.append(f"console.{p['type']}: {args[:300]}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            found.append(f"{entry.get('source', 'log')}: {entry.get('text', '')[:200]} "
                         f"{entry.get('url', '')}".rstrip())
    return found


async def _check_all(port: int, pages: list[Path], shots: Path | None) -> list[PageCheck]:
    from tornado.websocket import websocket_connect  # lazy: comes with Jupyter, only needed here

    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                timeout=10).read())
    page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
    ws = await websocket_connect(page_ws, max_message_size=256 * 1024 * 1024)
    tools = _DevTools(ws)
    try:
        for domain in ("Page", "Runtime", "Log"):
            await tools.send(f"{domain}.enable")
        width, height = VIEWPORT
        await tools.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
        results = []
        taken: set[str] = set()
        for page in pages:
            check = PageCheck(page=page)
            since = len(tools.events)
            await tools.send("Page.navigate", url=page.resolve().as_uri())
            if not await tools.wait_for("Page.loadEventFired", since, LOAD_TIMEOUT_S):
                check.errors.append(f"no load event within {LOAD_TIMEOUT_S:.0f} s")
            await asyncio.sleep(SETTLE_S)
            seen = await tools.send("Runtime.evaluate", expression=_INSPECT, returnByValue=True)
            value = seen.get("result", {}).get("value") or {}
            check.images, check.shown = int(value.get("images", 0)), int(value.get("shown", 0))
            check.title = str(value.get("title", ""))
            check.slides = int(value.get("slides", -1))
            if value.get("deck_ready") is False:
                check.errors.append("reveal.js did not start (the deck is not 'ready')")
            # a deck moves to its figure's slide with a transition; a page only scrolls
            await asyncio.sleep(DECK_SETTLE_S if check.slides >= 0 else 0.3)
            check.errors += _errors(tools.events[since:])
            if shots is not None:
                shot = await tools.send("Page.captureScreenshot", format="png")
                name = page.name.removesuffix(".html") + ".png"
                if name in taken:  # two index.html pages: name the second after its folder
                    name = f"{page.parent.name}_{name}"
                taken.add(name)
                check.screenshot = atomic_write_bytes(shots / name, base64.b64decode(shot["data"]))
                # each figure of a page on its own, as a reader sees it
                for k, box in enumerate(value.get("figures", [])[:MAX_FIGURE_SHOTS], start=1):
                    if box["width"] < 1 or box["height"] < 1:
                        continue
                    clip = dict(box, scale=1)
                    shot = await tools.send("Page.captureScreenshot", format="png", clip=clip,
                                            captureBeyondViewport=True)
                    check.figures.append(atomic_write_bytes(
                        shots / f"{name.removesuffix('.png')}.figure-{k}.png",
                        base64.b64decode(shot["data"])))
            results.append(check)
        return results
    finally:
        tools.reader.cancel()
        ws.close()


def check_pages(pages: list[str | Path], screenshots: str | Path | None = None,
                chromium: str | None = None) -> list[PageCheck]:
    """Open each page in one headless Chromium and report what it saw.

    Args:
        pages: HTML files to open (``file://`` URLs: the pages must work offline).
        screenshots: Folder for one PNG per page (named after the page), or None.
        chromium: The executable (default :func:`find_chromium`).

    Returns:
        One :class:`PageCheck` per page, in order.

    Raises:
        FileNotFoundError: No Chromium is installed, or a page does not exist.
        RuntimeError: Chromium did not start or its DevTools port did not answer.
    """
    paths = [Path(p) for p in pages]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"pages not found: {missing}")
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium, or set "
                                "GRADHEALTH_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="gradhealth-chromium-") as profile:
        cmd = [exe, "--headless=new", "--disable-gpu", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
               f"--user-data-dir={profile}", "--allow-file-access-from-files", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.is_file() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not start: {' '.join(cmd)}")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            shots = Path(screenshots) if screenshots is not None else None
            return asyncio.run(_check_all(port, paths, shots))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
