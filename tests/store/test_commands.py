"""``xiaozhi devices ...`` and ``xiaozhi db ...`` against real stores, through the real
command line (commands found through the entry point)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xiaozhi_core.cli import main
from xiaozhi_core.store import Store, StoreSettings

A, B = "aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"


def _fill(settings: StoreSettings) -> None:
    async def work() -> None:
        async with Store(settings) as store:
            now = time.time()
            store.device_seen(
                A, client_id="c-a", board="bread\x1b[2J-compact", firmware="1.6.2", at=now - 100
            )
            store.device_seen(B, board="esp-box-3", firmware="1.5.0", at=now - 50)
            store.session_started("s-1", A, transport="websocket", at=now - 90)
            for n in (1, 2):
                store.turn_recorded(
                    session_id="s-1",
                    device_id=A,
                    turn=n,
                    kind="voice",
                    outcome="ok",
                    text=f"what is {n}+{n}",
                    reply=f"{2 * n}",
                    latency={"total_ms": 700.0 + n},
                    at=now - 90 + n,
                )
            store.session_ended("s-1", reason="idle timeout", at=now - 80)
            await store.set_memory(A, "summary", "Asks about sums.")

    asyncio.run(work())


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_and_devices_commands_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    where = ["--data-dir", data]
    code, _, err = _cli(capsys, "devices", "list", *where)
    assert code == 1 and err.startswith("xiaozhi: error: no store at ")
    assert "xiaozhi db upgrade" in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists()  # a read creates nothing
    assert _cli(capsys, "db", "status", *where)[0] == 1

    code, out, _ = _cli(capsys, "db", "upgrade", *where)
    assert code == 0
    assert out == f"store sqlite {data}/xiaozhi.db: schema at revision 0001 (newest)\n"
    code, out, _ = _cli(capsys, "db", "status", *where)
    assert code == 0 and "0001 (newest)" in out
    code, out, _ = _cli(capsys, "devices", "list", *where)
    assert code == 0 and out.startswith("no devices yet")

    _fill(StoreSettings(data_dir=data))
    code, out, _ = _cli(capsys, "devices", "list", *where)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["DEVICE", "CLIENT", "BOARD"]
    assert [line.split()[0] for line in lines[1:]] == [B, A]  # most recently seen first
    assert "\x1b" not in out and "bread [2J-compact" in out  # no terminal escapes
    code, out, _ = _cli(capsys, "devices", "list", "--json", *where)
    assert [d["device_id"] for d in json.loads(out)] == [B, A]

    code, out, _ = _cli(capsys, "devices", "show", A.upper(), *where)
    assert code == 0
    assert "Asks about sums." in out and "idle timeout" in out
    assert "what is 2+2" in out and "702" in out
    code, out, _ = _cli(capsys, "devices", "show", A, "--json", *where)
    shown = json.loads(out)
    assert [t["text"] for t in shown["turns"]] == ["what is 2+2", "what is 1+1"]
    assert shown["memory"] == {"summary": "Asks about sums."}
    code, _, err = _cli(capsys, "devices", "show", "ff:ff:ff:ff:ff:ff", *where)
    assert code == 1 and "no device 'ff:ff:ff:ff:ff:ff'" in err

    code, out, _ = _cli(capsys, "devices", "set-profile", A, "kids", *where)
    assert code == 0 and out.startswith(f"device {A}: profile kids (")
    code, out, _ = _cli(capsys, "devices", "list", "--json", *where)
    assert {d["device_id"]: d["profile"] for d in json.loads(out)} == {A: "kids", B: None}
    assert _cli(capsys, "devices", "set-profile", A, "--default", *where)[0] == 0
    code, _, err = _cli(capsys, "devices", "set-profile", "12:00:00:00:00:00", "kids", *where)
    assert code == 1 and "--create" in err
    assert (
        _cli(capsys, "devices", "set-profile", "12:00:00:00:00:00", "kids", "--create", *where)[0]
        == 0
    )
    code, _, err = _cli(capsys, "devices", "set-profile", A, *where)
    assert code == 2 and "either a profile NAME or --default" in err


def test_commands_read_the_store_section_of_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "state"
    config = tmp_path / "deploy.yaml"
    monkeypatch.setenv("XZ_TEST_DATA", str(data))
    config.write_text(
        "server: {port: 8000}\n"  # the rest of a deployment is not read
        "asr: {provider: not-installed}\n"
        "store:\n  data_dir: ${XZ_TEST_DATA}\n  retention_days: 30\n"
    )
    code, out, _ = _cli(capsys, "db", "upgrade", "-c", str(config))
    assert code == 0 and str(data / "xiaozhi.db") in out
    # a broken store section: the key path and the file, exit code 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: {batch_size: 0}\n")
    code, _, err = _cli(capsys, "devices", "list", "-c", str(bad))
    assert code == 2
    assert err == f"xiaozhi: config error: {bad}: store.batch_size: must be at least 1, got 0\n"
    code, _, err = _cli(capsys, "devices", "list", "--store-url", "mysql://x@y/z")
    assert code == 2 and "store.url: unsupported database 'mysql'" in err
    # with -c, set-profile knows the deployment's profiles
    config.write_text(config.read_text() + "profiles: {kids: {reply_chars: 100}}\n")
    assert (
        _cli(
            capsys,
            "devices",
            "set-profile",
            "aa:00:00:00:00:07",
            "kids",
            "--create",
            "-c",
            str(config),
        )[0]
        == 0
    )
    code, _, err = _cli(
        capsys, "devices", "set-profile", "aa:00:00:00:00:07", "kidz", "-c", str(config)
    )
    assert code == 2 and "unknown profile 'kidz'" in err and "kids" in err


def test_commands_on_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "db", "status", "--store-url", pg_url)
    assert code == 1 and "revision - (empty" in out and "xz-test-pw" not in out
    assert _cli(capsys, "db", "upgrade", "--store-url", pg_url)[0] == 0
    _fill(StoreSettings(url=pg_url))
    code, out, _ = _cli(capsys, "devices", "list", "--json", "--store-url", pg_url)
    assert code == 0 and [d["device_id"] for d in json.loads(out)] == [B, A]
    code, _, err = _cli(
        capsys, "devices", "list", "--store-url", pg_url.replace("xz-test-pw", "wrong-password")
    )
    assert code == 1 and err.startswith("xiaozhi: error: store postgresql://xiaozhi:***@")
    assert "password authentication failed" in err and "wrong-password" not in err


def test_the_installed_cli_has_the_store_commands(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xiaozhi_core", "db", "upgrade", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "schema at revision 0001" in done.stdout


def test_no_database_library_is_imported_without_a_store() -> None:
    probe = (
        "import sys\n"
        "import xiaozhi_core.store, xiaozhi_core.store.settings\n"
        "from xiaozhi_core.cli import build_parser, load_commands\n"
        "build_parser(load_commands())\n"
        "import xiaozhi_core.gateway.server\n"
        "bad = [m for m in ('sqlalchemy', 'alembic', 'aiosqlite', 'asyncpg') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from xiaozhi_core.store import Store\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
