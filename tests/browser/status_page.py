#!/usr/bin/env python3
"""Drives the /status page in a real headless Chromium through ChromeDriver (W3C WebDriver over
HTTP, no client library): first without the admin token, then with a wrong one, then with the
right one, and checks that every figure the page shows equals the one the admin routes answer.

Usage: status_page.py <base url of the dev server> <chromedriver url> <admin token>
Run by scripts/browser-test.sh (from `make test`), which starts both servers.
"""
import datetime
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request

BASE, DRIVER, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(DRIVER + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["value"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"webdriver {method} {path}: {e.code} {e.read().decode()[:500]}")


def admin(path, token=TOKEN):
    request = urllib.request.Request(BASE + path, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Page:
    def __init__(self):
        profile = tempfile.mkdtemp(prefix="status-page-chromium-")
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
        caps = {"browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}
        self.session = call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def open(self, url):
        call("POST", self.s("/url"), {"url": url})

    def find(self, css):
        return call("POST", self.s("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def find_all(self, css):
        return [e[ELEMENT] for e in call("POST", self.s("/elements"), {"using": "css selector", "value": css})]

    def text(self, element):
        return call("GET", self.s(f"/element/{element}/text"))

    def attribute(self, element, name):
        return call("GET", self.s(f"/element/{element}/attribute/{name}"))

    def displayed(self, element):
        return call("GET", self.s(f"/element/{element}/displayed"))

    def type(self, css, text):
        call("POST", self.s(f"/element/{self.find(css)}/value"), {"text": text})

    def click(self, css):
        call("POST", self.s(f"/element/{self.find(css)}/click"), {})

    def wait_for(self, what, predicate, timeout=20, context=""):
        deadline = time.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.time() > deadline:
                message = self.text(self.find("#message"))
                updated = self.text(self.find("#updated"))
                raise SystemExit(f"status page: timed out after {timeout} s waiting for {what}; "
                                 f"the page says {message!r}, last refresh {updated}{context}")
            time.sleep(0.1)

    def quit(self):
        call("DELETE", self.s(""))


def lookup(root, path):
    value = root
    for key in path.split("."):
        if key == "length" and isinstance(value, list):
            return len(value)
        if value is None:
            return None
        value = value[int(key)] if isinstance(value, list) else value.get(key)
    return value


def shown(path, value):
    """The page's formatting rule for the figure at `path` (status.html's format())."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf == "length":
        return None  # a placeholder row; checked apart
    if value is None:
        return "—"
    if leaf.endswith("_ratio"):
        return f"{value * 100:.1f}%"
    if leaf in ("started_at", "since", "until"):
        moment = datetime.datetime.fromtimestamp(value / 1000, datetime.timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    return str(int(value))


def read_page(page):
    """Every shown figure, read in one script call: the page re-renders its rows every 5 s, so
    element-by-element reads could meet rows replaced in between."""
    return call("POST", page.s("/execute/sync"), {
        "script": "const out = {}; for (const e of document.querySelectorAll('[data-field]')) "
                  "out[e.dataset.field] = e.innerText; return out;",
        "args": [],
    })


def mismatches(figures, data):
    wrong = []
    for path, text in figures.items():
        if path.endswith(".length"):
            if lookup(data, path) != 0:
                wrong.append((path, text, f"a placeholder shown for {lookup(data, path)} items"))
            continue
        expected = shown(path, lookup(data, path))
        if text != expected:
            wrong.append((path, text, expected))
    return wrong


def main():
    # The script's reads reach the shared windows when a request finds the counters flush due
    # (every 10 s): wait for them, so the ratios shown are not all empty.
    deadline = time.time() + 40
    while admin("/admin/cache/stats")["last_5m"]["reads"] == 0:
        if time.time() > deadline:
            raise SystemExit("status page: the reads never reached /admin/cache/stats")
        time.sleep(0.5)
    page = Page()
    try:
        # 1. Without a token: the page says so, and shows no figures.
        page.open(BASE + "/status")
        message = page.find("#message")
        page.wait_for("the no-token message", lambda: "Enter the admin token" in page.text(message))
        assert not page.displayed(page.find("#figures")), "figures shown without a token"
        assert page.find_all("#windows tr") == [], "figures filled in without a token"

        # 2. A wrong token: refused, still nothing shown.
        page.type("#token", "not-the-token")
        page.click("#save-token")
        page.wait_for("the refusal", lambda: "refused" in page.text(message))
        assert not page.displayed(page.find("#figures")), "figures shown with a wrong token"

        # 3. The right token: the figures appear and equal the JSON routes'.
        page.type("#token", TOKEN)
        page.click("#save-token")
        page.wait_for("the figures", lambda: page.displayed(page.find("#figures")))
        for attempt in range(5):
            figures = read_page(page)
            data = {"stats": admin("/admin/cache/stats"), "health": admin("/admin/cache/health"),
                    "jobs": admin("/admin/jobs")}
            wrong = mismatches(figures, data)
            if not wrong:
                break
            # The page refreshes every 5 s; a figure may have moved between its read and ours.
            updated = page.text(page.find("#updated"))
            differences = "".join(f"\n  {p}: page {t!r}, routes {e!r}" for p, t, e in wrong)
            page.wait_for("the next refresh", lambda: page.text(page.find("#updated")) != updated,
                          timeout=30, context=f"; figures that differed:{differences}")
        else:
            raise SystemExit("status page: figures differ from the admin routes:\n" +
                             "\n".join(f"  {p}: page {t!r}, routes {e!r}" for p, t, e in wrong))
        windows = [f for f in figures if f.startswith("stats.last_")]
        assert len(windows) == 27, f"3 windows of 9 figures, got {len(windows)}"
        assert data["stats"]["last_5m"]["reads"] > 0 and figures["stats.last_5m.hit_ratio"] != "—", \
            "the test's reads are not in the figures"
        assert any(f.startswith("jobs.jobs.0.") for f in figures), "no job run shown"
        assert any(f.startswith("health.figures.") for f in figures), "no health figure shown"
        assert figures["health.status"] in ("HEALTHY", "WARNING", "CRITICAL")
        print(f"status page: {len(figures)} figures shown, all equal to the admin routes'")

        # It refreshes itself.
        updated = page.text(page.find("#updated"))
        page.wait_for("a refresh", lambda: page.text(page.find("#updated")) != updated, timeout=30)

        # 4. The token survives a reload (session storage), and forgetting it hides the figures.
        page.open(BASE + "/status")
        page.wait_for("the figures after a reload", lambda: page.displayed(page.find("#figures")))
        page.click("#forget-token")
        page.wait_for("the no-token message again",
                      lambda: "Enter the admin token" in page.text(page.find("#message")))
        assert not page.displayed(page.find("#figures")), "figures shown after forgetting the token"
    finally:
        page.quit()
    print("status page: ok")


if __name__ == "__main__":
    main()
