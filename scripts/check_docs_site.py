"""Check the documentation site in a real headless browser: its home page and its search.

Builds the site with ``mkdocs build --strict`` into a temporary folder (or takes ``--site DIR``),
serves it with ``python -m http.server`` on a free port of 127.0.0.1 (MkDocs Material's search
runs in a web worker, which a ``file://`` page cannot start), and drives Debian's headless
``chromium`` over the DevTools protocol on a pipe (``--remote-debugging-pipe``, no package
needed): the home page and a page with plots must render their heading, navigation and images
without a script error, and ``/?q=QUERY`` must open the search and list results whose links lead
to pages of the site.

``chromium --dump-dom --virtual-time-budget=N`` is not enough for the search: virtual time does
not wait for the worker, so the page was dumped before any result was listed (the results list
empty, whatever N); here each page is polled in real time until it is ready or ``--timeout``
seconds pass.

    pip install -e '.[docs]' && apt-get install chromium
    python scripts/check_docs_site.py [--query halving] [--screenshot search.png]

Exits 0 when every check passes (one ``ok:`` line each), 1 with a message naming what failed (the
strict build included), 2 when chromium is missing or ``--site`` holds no built site.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What a page must show: its title and heading, the site's navigation, the search box, the
#: theme's stylesheet applied, its images loaded.
PAGE_PROBE = """JSON.stringify({
  title: document.title,
  h1: ((document.querySelector("article h1") || {}).textContent || "").replace("¶", ""),
  nav: document.querySelectorAll("nav.md-nav--primary a.md-nav__link[href]").length,
  search: !!document.querySelector("[data-md-component=search]"),
  styled: (h => h ? getComputedStyle(h).position : "")(document.querySelector(".md-header")),
  images: Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0]),
  ready: document.readyState,
})"""

#: The search's state: results listed, the meta line ("5 matching documents"), the links.
SEARCH_PROBE = """JSON.stringify({
  query: (document.querySelector("[data-md-component=search-query]") || {}).value || "",
  open: !!(document.querySelector("#__search") || {}).checked,
  meta: ((document.querySelector(".md-search-result__meta") || {}).textContent || "").trim(),
  items: document.querySelectorAll(".md-search-result__item").length,
  links: Array.from(document.querySelectorAll(".md-search-result__link")).map(a => a.href),
})"""


#: The pages opened: the home page and one with plots (images).
PAGES = ("", "tune-your-own-model/")


class SiteCheckError(Exception):
    """A check of the site failed (the message says which and what was seen)."""


def build(out: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SiteCheckError(f"mkdocs build --strict failed:\n{proc.stdout}{proc.stderr}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(site: Path, seconds: float = 30.0) -> Iterator[str]:
    """``python -m http.server`` on a free port, serving ``site``; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        [*cmd, "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + seconds
        while True:
            try:
                urllib.request.urlopen(f"{base}/index.html", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > end:
                    err = server.stderr.read().decode() if server.poll() is not None else ""
                    raise SiteCheckError(f"http.server did not answer at {base} {err}") from None
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


#: Runs argv[3:] with fds argv[1] and argv[2] moved to 3 and 4, where the protocol expects them.
_AT_FDS_3_AND_4 = (
    "import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); "
    "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])"
)


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe: commands are JSON
    messages ended by a NUL byte, written to the browser's fd 3, answers read from its fd 4."""

    def __init__(self, exe: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the browser's ends above fd 9, so that moving them to fds 3 and 4 clobbers neither
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        args += ["--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run"]
        args += ["--window-size=1280,900", "about:blank"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _AT_FDS_3_AND_4, *map(str, ends), exe, *args],
            pass_fds=ends,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.exceptions: list[str] = []  # uncaught script errors of the page
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Runtime.enable", session=self.session)
        self.call("Page.enable", session=self.session)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise SiteCheckError("chromium did not answer over the DevTools pipe in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise SiteCheckError(f"chromium exited (status {self.proc.poll()})")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._message(deadline)
            if m.get("method") == "Runtime.exceptionThrown":
                d = m["params"]["exceptionDetails"]
                text = (d.get("exception") or {}).get("description") or d["text"]
                self.exceptions.append(text.strip().splitlines()[0])  # without its stack
            if m.get("id") == self._id:
                if "error" in m:
                    raise SiteCheckError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=self.session, url=url)

    def probe(self, expression: str) -> dict:
        r = self.call(
            "Runtime.evaluate", session=self.session, expression=expression, returnByValue=True
        )
        value = r.get("result", {}).get("value")
        return json.loads(value) if isinstance(value, str) else {}

    def wait_for(self, expression: str, ready, seconds: float) -> dict:
        """Polls ``expression`` (a JSON probe) until ``ready(value)`` or ``seconds`` pass;
        returns the last value."""
        end = time.time() + seconds
        seen: dict = {}
        while time.time() < end:
            with contextlib.suppress(json.JSONDecodeError):
                seen = self.probe(expression)
            if seen and ready(seen):
                break
            time.sleep(0.25)
        return seen

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))


def check_page(browser: Browser, base: str, path: str, seconds: float) -> str:
    """The page at ``base/path`` renders: title, heading, navigation, search box, the theme's
    stylesheet, every image loaded, no script error."""
    url = f"{base}/{path}"
    browser.open(url)
    # the whole document parsed (under load the images at the end came after the heading)
    ok = lambda s: (  # noqa: E731
        s.get("ready") == "complete"
        and s.get("nav")
        and all(loaded for _, loaded in s.get("images", []))
    )
    page = browser.wait_for(PAGE_PROBE, ok, seconds)
    broken = [src for src, loaded in page.get("images", []) if not loaded]
    problems = []
    if "jaxhpo" not in page.get("title", ""):
        problems.append(f"title {page.get('title')!r} does not name jaxhpo")
    if not page.get("h1"):
        problems.append("no page heading (article h1)")
    if not page.get("nav"):
        problems.append("no navigation links")
    if not page.get("search"):
        problems.append("no search box")
    if page.get("styled") not in ("sticky", "fixed"):
        problems.append(f"the theme's stylesheet did not apply (header {page.get('styled')!r})")
    if broken:
        problems.append(f"images that did not load: {', '.join(broken)}")
    if browser.exceptions:
        problems.append(f"script errors: {'; '.join(browser.exceptions)}")
    if problems:
        raise SiteCheckError(f"page {url}: " + "; ".join(problems))
    return (
        f"page /{path}: {page['h1'].strip()!r}, {page['nav']} navigation links, "
        f"{len(page['images'])} images loaded"
    )


def check_search(browser: Browser, base: str, query: str, seconds: float, site: Path) -> str:
    url = f"{base}/?q={urllib.parse.quote(query)}"
    browser.open(url)
    # done: results listed, or the search ran and matched nothing ("No matching documents")
    done = lambda s: s.get("items", 0) > 0 or s.get("meta", "").startswith("No ")  # noqa: E731
    found = browser.wait_for(SEARCH_PROBE, done, seconds)
    if not found.get("items"):
        why = "no results" if done(found) else f"no results rendered in {seconds:g} s"
        raise SiteCheckError(
            f"search {url}: {why} (search box {'open' if found.get('open') else 'closed'}, "
            f"query {found.get('query')!r}, meta {found.get('meta')!r}"
            + (f", script errors: {'; '.join(browser.exceptions)}" if browser.exceptions else "")
            + ")"
        )
    missing = []
    for link in found["links"]:
        path = urllib.parse.urlsplit(link).path.lstrip("/")
        page = site / path / "index.html" if not path or path.endswith("/") else site / path
        if not page.is_file():
            missing.append(link)
    if missing:
        raise SiteCheckError(f"search {url}: results link to missing pages: {', '.join(missing)}")
    if browser.exceptions:
        raise SiteCheckError(f"search {url}: script errors: {'; '.join(browser.exceptions)}")
    return f"search {query!r}: {found['items']} results ({found['meta']})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", type=Path, help="a built site (default: build one, strictly)")
    p.add_argument("--query", default="halving", help="what to search for")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds each page may take")
    p.add_argument("--screenshot", type=Path, help="save the search results' screenshot here")
    args = p.parse_args(argv)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("check_docs_site: Debian's chromium is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="jaxhpo-docs-") as tmp:
        try:
            site = args.site
            if site is None:
                site = Path(tmp) / "site"
                build(site)
            if not (site / "index.html").is_file():
                print(f"check_docs_site: {site} holds no built site", file=sys.stderr)
                return 2
            with serve(site) as base:
                browser = Browser(exe, Path(tmp) / "profile")
                try:
                    lines = [check_page(browser, base, page, args.timeout) for page in PAGES]
                    lines.append(check_search(browser, base, args.query, args.timeout, site))
                    if args.screenshot:
                        browser.screenshot(args.screenshot)
                finally:
                    browser.close()
        except SiteCheckError as e:
            print(f"check_docs_site: {e}", file=sys.stderr)
            return 1
    for line in lines:
        print(f"ok: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
