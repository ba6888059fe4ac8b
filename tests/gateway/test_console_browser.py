"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright for
Python; ``scripts/setup.sh --dev`` installs both, never Playwright's own browsers).

One server (fake providers, a real SQLite store) runs on a thread of its own with its
own event loop, so the synchronous browser calls never stall it; a FakeDevice talks to it
on that loop. One browser for the module. Screenshots of each view go to
``$XIAOZHI_CONSOLE_SHOTS`` (default: the test's temp directory).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from xiaozhi_core.device import FakeDevice
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.store import Store

from .conftest import utterance

pytestmark = pytest.mark.slow

T = TypeVar("T")
TOKEN = "browser-test-token-0123456789"
DEVICE = "aa:bb:cc:00:00:42"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<img src=x onerror="window.__xss=1">'
REPLY = "It is half past six. Ask me anything else!"


def deployment(data: Path, kids: str) -> str:
    """The deployment of the fleet wiring: the kids profile cuts replies after a sentence."""
    return f"""\
server: {{host: 127.0.0.1, port: 0, http_port: 0, admin: {{token: {TOKEN}}},
         limits: {{max_loop_lag_ms: 0}}}}
store: {{data_dir: "{data}", flush_interval: 0.05}}
session: {{silence_ms: 300, min_speech_ms: 120, system_prompt: "DEFAULT PROMPT"}}
vad: {{provider: fake}}
asr: {{provider: fake, options: {{text: "What time is it?", delay: 0.2}}}}
llm: {{provider: fake, options: {{reply: "{REPLY}", first_token_delay: 0.8}}}}
tts: {{provider: fake, options: {{seconds_per_char: 0.03}}}}
profiles:
  kids: {{system_prompt: "{kids}", reply_chars: 10}}
"""


class LiveServer:
    """A XiaozhiServer on a thread with its own loop; ``call`` runs a coroutine there."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.config_file = data_dir / "console.yaml"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="live-server", daemon=True
        )
        self.thread.start()
        self.server: XiaozhiServer | None = None
        self.store: Store | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def start(self) -> None:
        # a real deployment file, so the console's Reload button has something to read
        from xiaozhi_core.config import load_config
        from xiaozhi_core.registry import default_registry

        self.config_file.write_text(deployment(self.data_dir, "KIDS PROMPT ONE"))
        registry = default_registry()
        config = load_config([self.config_file], registry, auto_local=False)
        self.server = server = await XiaozhiServer.create(config, registry)
        await server.start(port=0, http_port=0)
        # the server's own store, opened from ``store:``: the turns it records are the
        # ones the console shows
        assert server.store is not None
        self.store = server.store

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()  # closes its store too

    def close(self) -> None:
        try:
            self.call(self.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("console-store"))
    server.call(server.start())
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --dev (apt chromium)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("XIAOZHI_CONSOLE_SHOTS")
    if target:
        path = Path(target)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def _console(live: LiveServer) -> str:
    assert live.server is not None
    return f"http://127.0.0.1:{live.server.http_port}/console/"


async def _voice_turn(dev: FakeDevice) -> dict[str, Any]:
    after = len(dev.received)
    await dev.listen("start", "auto")
    await dev.stream(utterance(), realtime=True)
    return await dev.wait_for("tts", "stop", timeout=30, after=after)


async def _ota_check(live: LiveServer, dev: FakeDevice) -> None:
    import aiohttp

    assert live.server is not None
    headers = {
        "Device-Id": dev.device_id,
        "Client-Id": dev.client_id,
        "User-Agent": "bread-compact-wifi/1.6.2",
    }
    body = {
        "application": {"name": "xiaozhi", "version": "1.6.2"},
        "board": {"type": "bread-compact-wifi"},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(live.server.ota_url, json=body, headers=headers) as resp,
    ):
        assert resp.status == 200


def _prompt(llm: Any) -> str:
    """What the fake LLM was last asked, as text."""
    return "\n".join(f"{m.role}: {m.content}" for m in llm.requests[-1][0])


def test_console_end_to_end(live: LiveServer, browser: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(15000)
    page.goto(_console(live))

    # --- login
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#bar")).to_be_hidden()
    page.screenshot(path=str(shots / "1-login.png"))
    page.fill("#token", "wrong-token-0123456789")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_have_text("wrong admin token")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    expect(page.locator("#view-sessions")).to_be_visible()

    # --- a live session while the device talks (after its OTA check, as the firmware)
    dev = FakeDevice(live.server.ws_url, device_id=DEVICE)  # type: ignore[union-attr]
    live.call(_ota_check(live, dev))
    live.call(dev.connect())
    try:
        row = page.locator(f'#sessions-body tr:has-text("{DEVICE}")')
        expect(row).to_be_visible()
        talking = live.submit(_voice_turn(dev))
        expect(row.locator(".state")).to_have_text(
            re.compile("recognising|thinking|synthesising|speaking"), timeout=20000
        )
        expect(row).to_contain_text("websocket")
        page.screenshot(path=str(shots / "2-sessions.png"))
        talking.result(30)
        assert live.store is not None
        assert live.call(live.store.flush())

        # --- devices (one more, whose OTA report is hostile: shown as text, never run)
        live.store.device_seen("evil:00", board=HOSTILE, firmware="<b>9</b>")
        assert live.call(live.store.flush())
        page.click('header a[data-view="devices"]')
        drow = page.locator(f'#devices-body tr:has-text("{DEVICE}")')
        expect(drow).to_contain_text("online")
        expect(page.locator('#devices-body tr:has-text("evil:00")')).to_contain_text(HOSTILE)
        assert page.evaluate("window.__xss === undefined")
        assert page.locator("#devices-body img, #devices-body b").count() == 0
        page.screenshot(path=str(shots / "3-devices.png"))

        # --- one device: the turn, its transcript and latency breakdown
        drow.locator("a").click()
        expect(page.locator("#device-title")).to_have_text(DEVICE)
        expect(page.locator("#device-facts")).to_contain_text("bread-compact-wifi")
        expect(page.locator("#device-facts")).to_contain_text("1.6.2")
        card = page.locator("#turns .turn").first
        expect(card.locator(".said")).to_have_text("What time is it?")
        expect(card.locator(".reply")).to_have_text(REPLY)
        expect(card.locator(".lat")).to_contain_text(re.compile(r"ASR \d+ ms"))
        expect(card.locator(".lat")).to_contain_text(re.compile(r"TTFA \d+ ms"))
        assert card.locator(".bar i").count() >= 3
        page.screenshot(path=str(shots / "4-device.png"), full_page=True)

        # --- change its profile
        page.select_option("#profile-select", "kids")
        page.click("#profile-form button")
        expect(page.locator("#profile-msg")).to_contain_text("Saved")
        stored = live.call(live.store.get_device(DEVICE))
        assert stored is not None and stored.profile == "kids"
        # the next turn uses it: the kids prompt reaches the LLM, the reply is cut
        # after its first sentence (reply_chars), the live session shows the profile
        live.call(_voice_turn(dev))
        llm = live.server.providers.llm.instance  # type: ignore[union-attr]
        assert "KIDS PROMPT ONE" in _prompt(llm)
        assert live.call(live.store.flush())
        page.reload()
        first = page.locator("#turns .turn").first
        expect(first.locator(".reply")).to_have_text("It is half past six.")
        expect(page.locator("#turns .turn").nth(1).locator(".reply")).to_have_text(REPLY)
        expect(page.locator("#profile-select")).to_have_value("kids")
        page.screenshot(path=str(shots / "5-device-after-profile.png"), full_page=True)
        page.click('header a[data-view="sessions"]')
        expect(row.locator("td").nth(1)).to_have_text("kids")

        # --- reload from the console: applied, then a broken file refused
        live.config_file.write_text(deployment(live.data_dir, "KIDS PROMPT TWO"))
        page.click("#reload")
        expect(page.locator("#status")).to_have_text("configuration reloaded")
        live.call(_voice_turn(dev))
        assert "KIDS PROMPT TWO" in _prompt(llm)
        live.config_file.write_text(deployment(live.data_dir, "X") + "bogus: 1\n")
        page.click("#reload")
        expect(page.locator("#error")).to_contain_text("Reload refused")
        expect(page.locator("#error")).to_contain_text("bogus")
        page.screenshot(path=str(shots / "6-reload-refused.png"))
        live.call(_voice_turn(dev))
        assert "KIDS PROMPT TWO" in _prompt(llm)
    finally:
        live.call(dev.close())

    # --- charts (one closed sample, and the interval in progress)
    assert live.server is not None
    window, srv = live.server.metrics.window, live.server
    live.loop.call_soon_threadsafe(
        lambda: window.close(
            __import__("time").time() - 5, len(srv.sessions), list(srv.lag_monitor.lags)
        )
    )
    page.click('header a[data-view="charts"]')
    for chart in ("ttfa", "lane", "loop", "sessions"):
        expect(page.locator(f"#chart-{chart} svg polyline").first).to_be_attached()
    page.screenshot(path=str(shots / "7-charts.png"), full_page=True)

    # --- log out: the login again, and the token is gone
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#bar")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    page.close()


def test_without_the_token_the_page_shows_the_login(
    live: LiveServer, browser: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(15000)
    # a deep link, no token in this tab: the login, and the API says 401
    page.goto(_console(live) + "#/devices")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#view-devices")).to_be_hidden()
    status = page.evaluate("fetch('/api/v1/devices').then(r => r.status)")
    assert status == 401
    # a stale token (e.g. rotated on the server): the first call's 401 brings the login back
    page.goto(_console(live) + "#/sessions")
    page.evaluate(f"sessionStorage.setItem('xiaozhi-admin-token', 'stale-token-{'x' * 12}')")
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("wrong admin token")
    expect(page.locator("#bar")).to_be_hidden()
    expect(page.locator("#view-sessions")).to_be_hidden()
    page.screenshot(path=str(shots / "8-no-token.png"))
    page.close()
