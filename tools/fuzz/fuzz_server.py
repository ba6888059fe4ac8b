"""Fuzz a running xiaozhi-core server from the outside (issue 9): random and structured
inputs over real sockets, with a canary device holding a conversation throughout.

Not a CI test: a tool to run by hand (minutes, two busy cores). It starts
``xiaozhi serve`` on the fake providers (auth on, a static token for the fuzz clients)
as a child process, logs it to a file, and drives these categories in parallel:

``ws_text``      text frames: mutated protocol messages (wrong types, missing fields, huge
                 values, deep nesting, lone surrogates, unknown types) and random garbage
``ws_binary``    binary frames: random bytes, truncated v2/v3 headers, random "Opus"
``state``        listen/abort/hello/detect in random order, as fast as possible
``mcp``          MCP replies of every wrong shape to the server's requests, and unsolicited
``handshake``    raw WebSocket upgrades: repeated/odd identity headers, odd paths and tokens
``http``         OTA/health/metrics: random bodies, headers, encodings, request lines
``churn``        connect and vanish (before hello, mid-hello, mid-turn)
``slow``         half-sent HTTP requests and WebSocket clients that stop reading
``flood``        audio sent as fast as TCP allows

and reports: inputs per category, server crashes (process exit, "crashed" sessions),
HTTP 5xx, tracebacks and ERROR lines in the server log, the longest log line, canary
turns ok/failed, and the server's RSS before and after (once idle).

Usage (from the repository root, after ``bash scripts/setup.sh --dev``)::

    .venv/bin/python tools/fuzz/fuzz_server.py --inputs 100000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.protocol.framing import encode_frame

TOKEN = "fuzz-token"
CONFIG = f"""\
server:
  host: 127.0.0.1
  port: 0
  http_port: 0
  workers: 1          # one process: its RSS is the server's
  drain_timeout: 5    # SIGTERM at the end: fuzz clients cut mid-close need not be waited for
  auth: {{enabled: true, tokens: [{TOKEN}]}}
  # every fuzz client comes from 127.0.0.1: per-address budgets are raised so the
  # inputs reach the session (tests/gateway/test_hardening_b.py covers those budgets)
  limits: {{max_loop_lag_ms: 0, max_sessions: 512, max_pending_per_peer: 256,
           max_connections_per_peer: 1024, max_pending_handshakes: 256}}
  timeouts: {{hello: 3, idle: 60}}
  http: {{header_timeout: 3, body_timeout: 3, keepalive_timeout: 5, max_connections: 128,
         ota_per_minute: 1000000, ota_burst: 1000000}}
session: {{silence_ms: 300, min_speech_ms: 120}}
# record: false - the fakes would otherwise keep every utterance and request (RSS)
vad: {{provider: fake, options: {{record: false}}}}
asr: {{provider: fake, options: {{text: "what time is it", record: false}}}}
llm: {{provider: fake_io, options: {{reply: "Fine, thanks.", record: false}}}}
tts: {{provider: fake, options: {{record: false}}}}
"""


# --------------------------------------------------------------------------- generators
def rand_text(rng: random.Random, n: int | None = None) -> str:
    n = rng.choice([0, 1, 5, 40, 300]) if n is None else n
    alphabet = "abc xyz 你好小智 \u00e9\u00a0\u200b\ufeff\U0001f600 \\ \" ' \n\t\x00\x1f\u2028"
    return "".join(rng.choice(alphabet) for _ in range(n))


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(14 if depth < 3 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63), 10**30])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, 1e-308, float("inf")])
    if kind == 4:
        return rand_text(rng)
    if kind == 5:
        return "x" * rng.choice([1000, 60_000])
    if kind == 6:
        return rng.choice(["\ud800", "a\udfffb", "\udc80", "\ud83d\ude00"])  # surrogates
    if kind == 7:
        return rng.choice(
            [
                "auto",
                "manual",
                "realtime",
                "start",
                "stop",
                "detect",
                "opus",
                "hello",
                "listen",
                "abort",
                "mcp",
                "",
            ]
        )
    if kind == 8:
        return rng.choice([[], {}, [[]], {"": None}])
    if kind in (9, 10):
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rand_text(rng, rng.randrange(1, 8)): rand_value(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


TEMPLATES: list[dict[str, Any]] = [
    {
        "type": "hello",
        "version": 1,
        "transport": "websocket",
        "features": {"mcp": True},
        "audio_params": {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": 60,
        },
    },
    {"type": "listen", "state": "start", "mode": "auto"},
    {"type": "listen", "state": "stop"},
    {"type": "listen", "state": "detect", "text": "hello"},
    {"type": "abort", "reason": "wake_word_detected"},
    {"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}},
    {"type": "iot", "descriptors": []},
    {"type": "goodbye"},
]


def mutate_message(rng: random.Random) -> str:
    """One text frame: a template with some fields replaced, dropped or added, or raw
    garbage, deep nesting or a huge frame."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(
            [
                "[" * 1000 + "]" * 1000,
                '{"a":' * 3000 + "1" + "}" * 3000,
                "[" * 100_000,
                '{"type":' * 2000,
            ]
        )[: rng.choice([60_000, 200_000])]
    if roll < 0.12:
        return "".join(chr(rng.randrange(32, 0xD800)) for _ in range(rng.randrange(1, 60)))
    if roll < 0.16:
        return rng.choice(
            [
                "",
                "null",
                "1",
                '"x"',
                "[]",
                "{}",
                '{"type":5}',
                '{"type":null}',
                "{nope",
                '{"type":"listen"',
                "\ufeff{}",
            ]
        )
    msg = json.loads(json.dumps(rng.choice(TEMPLATES)))
    for _ in range(rng.randrange(1, 4)):
        keys = list(msg)
        op = rng.random()
        if op < 0.5 and keys:
            key = rng.choice(keys)
            if key != "type" or rng.random() < 0.2:
                msg[key] = rand_value(rng)
        elif op < 0.7 and keys:
            key = rng.choice(keys)
            if key != "type" or rng.random() < 0.1:
                del msg[key]
        else:
            msg[
                rng.choice(
                    [
                        "text",
                        "state",
                        "mode",
                        "payload",
                        "session_id",
                        "features",
                        "audio_params",
                        "version",
                        rand_text(rng, 3),
                    ]
                )
            ] = rand_value(rng)
    try:
        text = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
        text.encode()  # a frame must be UTF-8: lone surrogates only as escapes
        return text
    except (ValueError, UnicodeEncodeError):
        return json.dumps(msg, ensure_ascii=True)


def random_binary(rng: random.Random, version: int) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return rng.randbytes(rng.randrange(0, 400))
    if roll < 0.5:
        return rng.randbytes(rng.randrange(0, 16))  # truncated headers
    if roll < 0.8:
        payload = rng.randbytes(rng.randrange(0, 300))
        frame = encode_frame(payload, version, rng.randrange(2**32))
        if rng.random() < 0.5 and len(frame) > 4:  # lie about the length
            i = rng.randrange(min(len(frame), 16))
            frame = frame[:i] + bytes([rng.randrange(256)]) + frame[i + 1 :]
        return frame
    return encode_frame(b"\xf8\xff\xfe", version, 0)  # a valid-looking tiny Opus packet


# --------------------------------------------------------------------------- the run
class Stats:
    def __init__(self) -> None:
        self.inputs: Counter[str] = Counter()
        self.http_5xx: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.canary_ok = 0
        self.canary_failed: list[str] = []
        self.notes: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.inputs.values())


class Fuzzer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.stop = asyncio.Event()
        #: The current phase's input budget, and the counts when it began.
        self.limit = 0
        self.canary_task: asyncio.Task[None] | None = None
        self.base: Counter[str] = Counter()
        self.ws_url = ""
        self.http_port = 0
        self.ws_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: (anonymous, file-backed) RSS in kB at each idle reading.
        self.idle_parts: list[tuple[int, int]] = []
        self.log_path = Path(args.log or tempfile.mktemp(prefix="xiaozhi-fuzz-", suffix=".log"))

    # ------------------------------------------------------------------ server
    def start_server(self) -> None:
        cfg = Path(tempfile.mkdtemp()) / "fuzz.yaml"
        cfg.write_text(CONFIG)
        xiaozhi = Path(sys.executable).with_name("xiaozhi")
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(xiaozhi), "--log-level", "info", "serve", "-c", str(cfg), "--no-local"],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise SystemExit(f"server exited at start-up; see {self.log_path}")
            if m := re.search(r"(ws://\S+)", line):
                self.ws_url = m.group(1)
                self.ws_port = int(self.ws_url.split(":")[2].split("/")[0])
            if m := re.search(r"OTA URL.*http://[^:]+:(\d+)/", line):
                self.http_port = int(m.group(1))
            if self.ws_url and self.http_port:
                return
        raise SystemExit("server did not print its URLs within 60 s")

    def rss_kb(self, field: str = "VmRSS") -> int:
        """The server's resident memory in kB (``RssAnon``: its heaps; ``RssFile``: mapped
        files such as shared libraries)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        return 0

    def server_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ helpers
    def budget(self, category: str) -> bool:
        share = self.limit * WEIGHTS[category] / sum(WEIGHTS.values())
        return not self.stop.is_set() and self.stats.inputs[category] - self.base[category] < share

    async def ws(self, **headers: str) -> ClientConnection:
        base = {
            "Device-Id": f"fu:zz:{self.rng.randrange(16**4):04x}",
            "Client-Id": "fuzz",
            "Authorization": f"Bearer {TOKEN}",
            "Protocol-Version": "1",
        }
        base.update(headers)
        return await connect(
            self.ws_url,
            additional_headers=base,
            compression=None,
            max_size=2**20,
            ping_interval=None,
            open_timeout=10,
            close_timeout=1,
        )

    @staticmethod
    async def drain(conn: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed, Exception):
            async for _ in conn:
                pass

    async def hello(self, conn: ClientConnection, mcp: bool = False) -> None:
        await conn.send(json.dumps({**TEMPLATES[0], "features": {"mcp": mcp}}))

    async def dial(
        self, category: str, pause: float = 0.2, note: bool = False, **headers: str
    ) -> ClientConnection | None:
        """A fuzz client's WebSocket; None after ``pause`` s when the connection or the
        handshake failed (counted as ``{category}_connect_failed`` with ``note``)."""
        try:
            return await self.ws(**headers)
        except (OSError, InvalidHandshake, TimeoutError):
            if note:
                self.stats.notes[f"{category}_connect_failed"] += 1
            await asyncio.sleep(pause)
            return None

    @contextlib.asynccontextmanager
    async def talking(
        self, conn: ClientConnection, closed_note: str | None = None, drain: bool = True
    ) -> AsyncIterator[ClientConnection]:
        """Around one client's inputs: what the server sends is read and dropped
        (``drain``); the server closing the connection ends the inputs (counted as
        ``closed_note``); the client closes it at the end."""
        reader = asyncio.create_task(self.drain(conn)) if drain else None
        try:
            yield conn
        except ConnectionClosed:
            if closed_note:
                self.stats.notes[closed_note] += 1
        finally:
            await conn.close()
            if reader is not None:
                reader.cancel()

    @staticmethod
    async def send_json(conn: ClientConnection, **message: Any) -> None:
        await conn.send(json.dumps(message))

    @staticmethod
    async def send_speech(conn: ClientConnection, packets: list[bytes]) -> None:
        """Opus packets as protocol-v1 binary frames, as fast as the connection takes them."""
        for packet in packets:
            await conn.send(encode_frame(packet, 1, 0))

    async def raw(self, port: int, data: bytes, wait: float = 5.0) -> int:
        """Send raw bytes; the HTTP status of the answer (0: closed without one)."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            self.stats.notes["connect_failed"] += 1
            return 0
        try:
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            try:
                async with asyncio.timeout(wait):
                    line = await reader.readline()
            except (TimeoutError, ConnectionError):
                return 0
            m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
            return int(m.group(1)) if m else 0
        finally:
            writer.close()

    def count_status(self, category: str, status: int) -> None:
        """5xx other than 503 (a deliberate refusal: connection cap, server full) is a
        server error."""
        self.stats.statuses[f"{category}:{status}"] += 1
        if status >= 500 and status != 503:
            self.stats.http_5xx[category] += 1

    async def guard(self, category: str, worker: int) -> None:
        """Run a category until its budget is spent; an error of the fuzz client itself
        (not of the server) is noted and the category goes on."""
        while self.budget(category):
            try:
                await getattr(self, category)(worker)
            except (
                OSError,
                ConnectionClosed,
                InvalidHandshake,
                TimeoutError,
                AttributeError,
                RuntimeError,
            ) as exc:
                self.stats.notes[f"{category}_client_error_{type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ categories
    async def ws_text(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 1000 + worker)
        while self.budget("ws_text"):
            if (conn := await self.dial("ws_text", note=True)) is None:
                continue
            async with self.talking(conn, "ws_text_closed_by_server"):
                await self.hello(conn)
                for _ in range(rng.randrange(200, 2000)):
                    if not self.budget("ws_text"):
                        break
                    await conn.send(mutate_message(rng))
                    self.stats.inputs["ws_text"] += 1

    async def ws_binary(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 2000 + worker)
        while self.budget("ws_binary"):
            version = rng.choice([1, 2, 3])
            conn = await self.dial("ws_binary", note=True, **{"Protocol-Version": str(version)})
            if conn is None:
                continue
            async with self.talking(conn, "ws_binary_closed_by_server"):
                await self.hello(conn)
                await self.send_json(
                    conn, type="listen", state="start", mode=rng.choice(["auto", "manual"])
                )
                for _ in range(rng.randrange(100, 1000)):
                    if not self.budget("ws_binary"):
                        break
                    await conn.send(random_binary(rng, version))
                    self.stats.inputs["ws_binary"] += 1
                    if rng.random() < 0.05:
                        await asyncio.sleep(0.01)

    async def state(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 3000 + worker)
        speech = encode_utterance(_speechlike(0.5))
        while self.budget("state"):
            if (conn := await self.dial("state")) is None:
                continue
            async with self.talking(conn):
                if rng.random() < 0.9:
                    await self.hello(conn)
                for _ in range(rng.randrange(20, 200)):
                    if not self.budget("state"):
                        break
                    choice = rng.randrange(7)
                    if choice == 0:
                        await self.send_speech(conn, speech[: rng.randrange(len(speech))])
                    else:
                        await conn.send(json.dumps(TEMPLATES[rng.randrange(len(TEMPLATES))]))
                    self.stats.inputs["state"] += 1
                    if rng.random() < 0.1:
                        await asyncio.sleep(rng.random() * 0.2)

    async def mcp(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 4000 + worker)
        while self.budget("mcp"):
            if (conn := await self.dial("mcp")) is None:
                continue
            async with self.talking(conn, drain=False):  # it reads the server's requests
                await self.hello(conn, mcp=True)
                while self.budget("mcp"):
                    try:
                        async with asyncio.timeout(1.0):
                            raw = await conn.recv()
                    except TimeoutError:
                        break  # the server stopped asking: unsolicited ones, then next
                    if not isinstance(raw, str):
                        continue
                    data = json.loads(raw)
                    if data.get("type") != "mcp":
                        continue
                    await self.send_mcp(conn, rng, data["payload"].get("id"))
                    if rng.random() < 0.3:
                        await self.send_json(conn, type="listen", state="detect", text="use a tool")
                for _ in range(rng.randrange(5, 50)):
                    if not self.budget("mcp"):
                        break
                    await self.send_mcp(conn, rng, rng.randrange(-2, 10))

    async def send_mcp(self, conn: ClientConnection, rng: random.Random, rid: Any) -> None:
        result = (
            rand_value(rng)
            if rng.random() < 0.6
            else {
                "tools": rand_value(rng),
                "nextCursor": rand_value(rng),
                "serverInfo": rand_value(rng),
                "content": rand_value(rng),
                "isError": rand_value(rng),
            }
        )
        payload: Any = rng.choice(
            [
                {"jsonrpc": "2.0", "id": rid, "result": result},
                {"jsonrpc": "2.0", "id": rid, "error": rand_value(rng)},
                {"jsonrpc": "2.0", "id": rand_value(rng), "result": result},
                {"jsonrpc": "2.0", "method": rand_value(rng), "params": rand_value(rng)},
                rand_value(rng),
            ]
        )
        try:
            text = json.dumps({"type": "mcp", "payload": payload})
        except ValueError:
            return
        await conn.send(text)
        self.stats.inputs["mcp"] += 1

    async def handshake(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 5000 + worker)
        paths = [
            "/xiaozhi/v1/",
            "//[/xiaozhi/v1/",
            "/xiaozhi/v1/?" + "a=" * 3000,
            "/x",
            "/xiaozhi/v1/?device-id=%ff%fe&authorization=Bearer%20%C2%B2.x",
            "/xiaozhi/v1/?authorization=Bearer%201.%C3%A9&device-id=a",
            "/xiaozhi/v1/?protocol-version=99999999999999999999",
            "*",
            "/%00",
        ]
        values = [
            "1",
            "2",
            "3",
            "0",
            "-1",
            "99999999999999999999",
            "",
            "\xff\xfe",
            "Bearer",
            "Bearer " + "1" * 5000 + ".x",
            "Bearer 1.\xc3\xa9",
            "Bearer \xb2.x",
            f"Bearer {TOKEN}",
            "x" * 7000,
            "a\tb",
            "aa:bb:cc:dd:ee:ff",
        ]
        names = ["Device-Id", "Client-Id", "Protocol-Version", "Authorization"]
        while self.budget("handshake"):
            head = (
                f"GET {rng.choice(paths)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n"
            )
            for _ in range(rng.randrange(5)):
                head += f"{rng.choice(names)}: {rng.choice(values)}\r\n"
            status = await self.raw(self.ws_port, (head + "\r\n").encode("latin-1"))
            self.count_status("handshake", status)
            self.stats.inputs["handshake"] += 1

    async def http(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 6000 + worker)
        bodies = [
            b"[" * 100_000,
            b'{"mac_address":5}',
            b'{"uuid":[]}',
            b"{nope",
            b"",
            b'{"application":{"version":5}}',
            b'{"mac_address":"\\ud800"}',
            b"null",
            b'{"application":"x"}',
            b"\xff\xfe",
            b"{}" * 1000,
        ]
        while self.budget("http"):
            roll = rng.random()
            if roll < 0.15:
                data = rng.choice(
                    [
                        b"GET //[ HTTP/1.1\r\n\r\n",
                        b"\x16\x03\x01\x00\x05hello",
                        b"GET / HTTP/9.9\r\n\r\n",
                        rng.randbytes(rng.randrange(64)),
                        b"POST /xiaozhi/ota/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
                    ]
                )
            else:
                body = (
                    rng.choice(bodies)
                    if rng.random() < 0.6
                    else json.dumps(rand_value(rng)).encode()
                )
                headers = b""
                for _ in range(rng.randrange(4)):
                    headers += rng.choice(
                        [
                            b"Device-Id: \xff\xfe\r\n",
                            b"Device-Id: a\r\n",
                            b"Client-Id: c\r\n",
                            b"Content-Encoding: gzip\r\n",
                            b"Content-Encoding: deflate\r\n",
                            b"Content-Encoding: br\r\n",
                            b"Transfer-Encoding: chunked\r\n",
                            b"Content-Type: text/plain\r\n",
                            b"Device-Id: " + b"x" * 300 + b"\r\n",
                        ]
                    )
                method = rng.choice([b"POST", b"POST", b"GET", b"OPTIONS", b"PUT"])
                path = rng.choice(
                    [b"/xiaozhi/ota/", b"/xiaozhi/ota", b"/health", b"/metrics", b"/nope"]
                )
                data = (
                    method
                    + b" "
                    + path
                    + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    + b"Content-Length: %d\r\n" % len(body)
                    + headers
                    + b"\r\n"
                    + body
                )
            status = await self.raw(self.http_port, data)
            self.count_status("http", status)
            self.stats.inputs["http"] += 1

    async def churn(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 7000 + worker)
        speech = encode_utterance(_speechlike(0.4))
        while self.budget("churn"):
            if (conn := await self.dial("churn", pause=0.1)) is None:
                continue
            try:
                stage = rng.randrange(4)
                if stage >= 1:
                    await self.hello(conn)
                if stage >= 2:
                    await self.send_json(
                        conn, type="listen", state="detect", text="tell me something"
                    )
                    await asyncio.sleep(rng.random() * 0.3)
                if stage >= 3:
                    await self.send_json(conn, type="listen", state="start", mode="auto")
                    await self.send_speech(conn, speech)
                    await asyncio.sleep(rng.random() * 0.5)
            except ConnectionClosed:
                pass
            finally:
                if rng.random() < 0.5:
                    conn.transport.abort()  # vanish
                else:
                    await conn.close()
            self.stats.inputs["churn"] += 1

    async def slow(self, worker: int) -> None:
        """Half-sent HTTP requests and WebSocket readers that stop reading mid-reply."""
        rng = random.Random(self.args.seed * 8000 + worker)
        while self.budget("slow"):
            if rng.random() < 0.5:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                writer.write(
                    rng.choice(
                        [
                            b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\n",
                            b"POST /xiaozhi/ota/ HTTP/1.1\r\nContent-Length: 99\r\n\r\n{",
                            b"G",
                        ]
                    )
                )
                try:
                    async with asyncio.timeout(10):
                        await reader.read()  # the server must close it
                except TimeoutError:
                    self.stats.notes["slow_http_held_over_10s"] += 1
                except ConnectionError:
                    pass
                writer.close()
            elif (conn := await self.dial("slow", pause=0)) is not None:
                try:
                    await self.hello(conn)
                    await self.send_json(
                        conn, type="listen", state="detect", text="tell me a long story"
                    )
                    await asyncio.sleep(rng.random() * 3)  # not reading
                except ConnectionClosed:
                    pass
                conn.transport.abort()
            self.stats.inputs["slow"] += 1

    async def flood(self, worker: int) -> None:
        rng = random.Random(self.args.seed * 9000 + worker)
        speech = encode_utterance(_speechlike(2.0))
        while self.budget("flood"):
            if (conn := await self.dial("flood")) is None:
                continue
            async with self.talking(conn, "flood_closed_by_server"):
                await self.hello(conn)
                await self.send_json(conn, type="listen", state="start", mode="realtime")
                deadline = time.monotonic() + rng.uniform(1, 4)
                while time.monotonic() < deadline and self.budget("flood"):
                    for p in speech:
                        await conn.send(encode_frame(p, 1, 0))
                        self.stats.inputs["flood"] += 1

    # ------------------------------------------------------------------ canary
    async def canary(self, done: asyncio.Event) -> None:
        """A real device: fetches its token over OTA, then talks every ~1.5 s (typed and
        spoken turns) for the whole run, reconnecting never."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{self.http_port}/xiaozhi/ota/",
                headers={"Device-Id": "ca:na:ry:00:00:01", "Client-Id": "canary"},
                json={"application": {"version": "1.6.0"}},
            )
            token = (await resp.json())["websocket"]["token"]
        dev = FakeDevice(
            self.ws_url, device_id="ca:na:ry:00:00:01", client_id="canary", token=token
        )
        speech = encode_utterance(_speechlike(0.6))
        async with dev:
            turn = 0
            while not done.is_set():
                turn += 1
                after = len(dev.received)
                try:
                    if turn % 3:
                        await dev.listen("detect", text=f"canary question {turn}")
                    else:
                        await dev.listen("start", "auto")
                        await dev.stream(speech, realtime=True)
                    stop = await dev.wait_for("tts", "stop", timeout=20, after=after)
                    alerts = [
                        r.message
                        for r in dev.received[after:]
                        if r.message is not None and r.message.get("type") == "alert"
                    ]
                    if alerts:
                        self.stats.canary_failed.append(f"turn {turn}: alert {alerts[0]}")
                    elif stop:
                        self.stats.canary_ok += 1
                except (TimeoutError, ConnectionError) as exc:
                    self.stats.canary_failed.append(f"turn {turn}: {type(exc).__name__} {exc}")
                    if dev.closed_code is not None:
                        return
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ main
    async def phase(self, inputs: int, t0: float) -> bool:
        """Drive every category until ``inputs`` more inputs were sent; False when the
        server died or the time ran out."""
        self.limit = inputs
        self.base = Counter(self.stats.inputs)
        self.stop.clear()
        workers = [
            asyncio.create_task(self.guard(category, i))
            for category, count in PARALLEL.items()
            for i in range(count)
        ]
        last_report = time.monotonic()
        ok = True
        while any(not w.done() for w in workers):
            await asyncio.sleep(1)
            if self.canary_task is not None and self.canary_task.done():
                print("CANARY ENDED", flush=True)
                ok = False
                break
            if not self.server_alive():
                print("SERVER DIED", flush=True)
                ok = False
                break
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(
                    f"  {time.monotonic() - t0:5.0f} s  {self.stats.total:7d} inputs  "
                    f"canary ok {self.stats.canary_ok} failed "
                    f"{len(self.stats.canary_failed)}  rss {self.rss_kb() // 1024} MB",
                    flush=True,
                )
            if time.monotonic() - t0 > self.args.max_seconds:
                print("time limit reached", flush=True)
                ok = False
                break
        self.stop.set()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return ok

    async def idle_rss(self) -> int:
        """RSS once the fuzz clients are gone and the server had time to settle."""
        await asyncio.sleep(self.args.idle_seconds)
        if not self.server_alive():
            return 0
        self.idle_parts.append((self.rss_kb("RssAnon"), self.rss_kb("RssFile")))
        return self.rss_kb()

    async def run(self) -> int:
        self.start_server()
        print(
            f"server pid {self.proc.pid if self.proc else '?'}: {self.ws_url}, http port "
            f"{self.http_port}; log {self.log_path}",
            flush=True,
        )
        await asyncio.sleep(1)
        rss_start = self.rss_kb()
        canary_stop = asyncio.Event()
        canary = self.canary_task = asyncio.create_task(self.canary(canary_stop))
        t0 = time.monotonic()
        ok = True
        if self.args.warmup_inputs:
            print(f"warm-up: {self.args.warmup_inputs} inputs", flush=True)
            ok = await self.phase(self.args.warmup_inputs, t0)
        warm_inputs = self.stats.total
        rss_warm = await self.idle_rss() if ok else 0
        print(
            f"main run: {self.args.inputs} inputs (RSS after warm-up, idle: {rss_warm // 1024} MB)",
            flush=True,
        )
        t1 = time.monotonic()
        if ok:
            ok = await self.phase(self.args.inputs, t0)
        elapsed = time.monotonic() - t1
        canary_stop.set()
        try:
            await asyncio.wait_for(canary, 30)
        except Exception as exc:  # the canary itself broke: that is a failure too
            self.stats.canary_failed.append(f"canary ended: {type(exc).__name__}: {exc}")
        alive = self.server_alive()
        rss_peak = self.rss_kb() if alive else 0
        rss_idle = await self.idle_rss()
        if alive and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                print("server did not exit 30 s after SIGTERM: killed", flush=True)
                self.proc.kill()
                self.proc.wait()
        return self.report(elapsed, alive, rss_start, rss_warm, rss_peak, rss_idle, warm_inputs)

    def report(
        self,
        elapsed: float,
        alive: bool,
        rss_start: int,
        rss_warm: int,
        rss_peak: int,
        rss_idle: int,
        warm_inputs: int,
    ) -> int:
        log = self.log_path.read_text(errors="replace")
        lines = log.splitlines()
        tracebacks = log.count("Traceback (most recent call last)")
        errors = [ln for ln in lines if " ERROR " in ln]
        crashed = [ln for ln in lines if "crashed" in ln]
        longest = max((len(ln) for ln in lines), default=0)
        s = self.stats
        base = rss_warm or rss_start
        growth = (rss_idle - base) / base * 100 if base and rss_idle else float("nan")
        print("\n==== fuzz summary ====")
        main = s.total - warm_inputs
        print(
            f"inputs: {main} in the main run ({elapsed:.0f} s) after {warm_inputs} of "
            f"warm-up (seed {self.args.seed}); per category, both phases:"
        )
        for category in WEIGHTS:
            print(f"  {category:10s} {s.inputs[category]:7d}")
        print(
            f"server alive at end: {alive}; exit code after SIGTERM: "
            f"{self.proc.returncode if self.proc else '?'}"
        )
        print(f"crashed sessions: {len(crashed)}")
        print(f"HTTP 5xx: {sum(s.http_5xx.values())} {dict(s.http_5xx)}")
        top = s.statuses.most_common(12)
        print(f"statuses: {dict(top)}")
        print(
            f"tracebacks in log: {tracebacks}; ERROR lines: {len(errors)}; log lines: "
            f"{len(lines)}; longest line: {longest} chars"
        )
        for line in errors[:5] + crashed[:3]:
            print(f"    {line[:240]}")
        print(f"canary: {s.canary_ok} turns ok, {len(s.canary_failed)} failed")
        for failure in s.canary_failed[:5]:
            print(f"    {failure[:240]}")
        print(
            f"RSS: at start {rss_start // 1024} MB, idle after warm-up {base // 1024} MB, "
            f"end of load {rss_peak // 1024} MB, idle after the run {rss_idle // 1024} MB "
            f"({growth:+.1f}% vs idle after warm-up)"
        )
        if self.idle_parts:
            parts = ", ".join(
                f"{a // 1024} MB anon + {f // 1024} MB file" for a, f in self.idle_parts
            )
            print(f"RSS once idle (after warm-up, after the run): {parts}")
        print(f"notes: {dict(s.notes)}")
        ok = (
            alive
            and not crashed
            and not s.http_5xx
            and not tracebacks
            and not errors
            and not s.canary_failed
            and growth <= 10
        )
        print("RESULT:", "PASS" if ok else "FAIL")
        return 0 if ok else 1


#: Share of the input budget per category, and parallel clients per category.
WEIGHTS = {
    "ws_text": 40,
    "ws_binary": 25,
    "state": 8,
    "mcp": 3,
    "handshake": 8,
    "http": 10,
    "churn": 1.5,
    "slow": 0.1,
    "flood": 4,
}
PARALLEL = {
    "ws_text": 3,
    "ws_binary": 2,
    "state": 2,
    "mcp": 3,
    "handshake": 2,
    "http": 2,
    "churn": 12,
    "slow": 6,
    "flood": 1,
}


def _speechlike(seconds: float) -> Any:
    import numpy as np

    from xiaozhi_core.testing import tone

    return np.concatenate([np.zeros(4800, np.int16), tone(seconds), np.zeros(9600, np.int16)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--inputs", type=int, default=100_000, help="inputs of the measured run (after the warm-up)"
    )
    p.add_argument(
        "--warmup-inputs",
        type=int,
        default=20_000,
        help="inputs before the RSS baseline is read (caches, allocator arenas)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=1800)
    p.add_argument(
        "--idle-seconds", type=float, default=15, help="wait before the idle RSS reading"
    )
    p.add_argument("--log", help="server log file (default: a temp file)")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(Fuzzer(args).run())


if __name__ == "__main__":
    sys.exit(main())
