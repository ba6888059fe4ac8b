"""OTA firmware delivery: ota.firmware_dir builds offered to older devices of the same
board, downloaded from the HTTP port with resume (range requests) and a checksum; and
server_time in ota.timezone."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from xiaozhi_core.config import merge
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.sim.driver import ota_body
from xiaozhi_core.testing import fake_config

BOARD = "bread-compact-wifi"


@pytest.fixture
async def server(tmp_path: Path):
    builds = tmp_path / "firmware"
    builds.mkdir()
    (builds / f"{BOARD}_1.6.0.bin").write_bytes(os.urandom(1000))
    (builds / f"{BOARD}_1.10.2.bin").write_bytes(os.urandom(300_000))
    (builds / "other-board_9.0.0.bin").write_bytes(b"x")
    (builds / "README.txt").write_text("not a build")
    config = fake_config(
        **merge(
            {"server": {"limits": {"max_loop_lag_ms": 0}}},
            {"ota": {"firmware_dir": str(builds), "timezone": "Asia/Shanghai"}},
        )
    )
    srv = await XiaozhiServer.create(config)
    await srv.start(port=0, http_port=0)
    yield srv
    await srv.stop()


async def check(server: XiaozhiServer, version: str, board: str = BOARD) -> dict[str, Any]:
    body = ota_body("aa:bb:cc:dd:ee:ff", "u1", version)
    body["board"]["type"] = board
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.ota_url,
            data=json.dumps(body),
            headers={"Device-Id": "aa:bb:cc:dd:ee:ff", "User-Agent": f"{board}/{version}"},
        ) as resp,
    ):
        assert resp.status == 200
        return dict(await resp.json())


async def test_older_version_gets_the_newest_build_of_its_board(server, tmp_path):
    answer = await check(server, "1.9.0")
    fw = answer["firmware"]
    assert fw["version"] == "1.10.2" and fw["size"] == 300_000
    assert fw["url"].endswith(f"/xiaozhi/ota/firmware/{BOARD}_1.10.2.bin")
    expected = (tmp_path / "firmware" / f"{BOARD}_1.10.2.bin").read_bytes()
    assert fw["sha256"] == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("version", ["1.10.2", "1.10.3", "2.0"])
async def test_same_or_newer_version_gets_none(server, version):
    assert (await check(server, version))["firmware"] == {"version": version, "url": ""}


async def test_other_boards_get_nothing_of_this_board(server):
    assert (await check(server, "0.1", board="lamp"))["firmware"]["url"] == ""


async def test_download_resumes_with_range_requests_and_carries_the_checksum(server):
    fw = (await check(server, "1.0.0"))["firmware"]
    async with aiohttp.ClientSession() as http:
        async with http.get(fw["url"]) as resp:  # interrupted after 100 kB
            assert resp.status == 200
            assert resp.headers["X-Checksum-SHA256"] == fw["sha256"]
            assert resp.headers["Repr-Digest"].startswith("sha-256=:")
            first = await resp.content.readexactly(100_000)
        async with http.get(fw["url"], headers={"Range": "bytes=100000-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == "bytes 100000-299999/300000"
            rest = await resp.read()
    assert hashlib.sha256(first + rest).hexdigest() == fw["sha256"]


@pytest.mark.parametrize("name", ["..%2Fsecret.bin", "README.txt", "nope_1.0.bin"])
async def test_only_listed_builds_are_served(server, name):
    url = f"http://127.0.0.1:{server.http_port}/xiaozhi/ota/firmware/{name}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 404


async def test_server_time_uses_the_configured_timezone(server):
    assert (await check(server, "1.10.2"))["server_time"]["timezone_offset"] == 480


def test_unknown_timezone_is_a_config_error():
    from xiaozhi_core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        fake_config(ota={"timezone": "Mars/Olympus"})
