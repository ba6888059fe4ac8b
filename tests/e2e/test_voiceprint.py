"""Speaker identification end to end: enroll through the CLI, then a spoken turn by the
same voice reaches the LLM with the speaker's name as context; another voice does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from xiaozhi_core import cli
from xiaozhi_core.audio import read_wav
from xiaozhi_core.config import load_config
from xiaozhi_core.device import FakeDevice, encode_utterance
from xiaozhi_core.gateway import XiaozhiServer
from xiaozhi_core.registry import default_registry

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[2] / "plugins/xiaozhi-voiceprint/tests/data"


@pytest.fixture(params=["store", "files"])
def config_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Voices in the device store (shared by every worker), or in the provider's files."""
    store = (
        f'{{data_dir: "{tmp_path / "data"}"}}' if request.param == "store" else "{enabled: false}"
    )
    path = tmp_path / "vp.yaml"
    path.write_text(f"""
store: {store}
server: {{host: 127.0.0.1, port: 0, http_port: 0, limits: {{max_loop_lag_ms: 0}}}}
vad: {{provider: silero}}
asr: {{provider: fake, options: {{text: "who am I"}}}}
llm: {{provider: fake, options: {{reply: "Nice to hear you."}}}}
tts: {{provider: fake}}
voiceprint: {{provider: resemblyzer, options: {{store_dir: "{tmp_path / "voices"}"}}}}
""")
    return path


async def spoken_turn(server: XiaozhiServer, wav: Path) -> str:
    pcm = np.concatenate([np.zeros(8000, np.int16), read_wav(str(wav)), np.zeros(20000, np.int16)])
    async with FakeDevice(server.ws_url) as dev:
        await dev.listen("start", "auto")
        await dev.stream(encode_utterance(pcm), realtime=False)
        await dev.wait_for("tts", "stop", timeout=60)
    messages, _tools = server.providers.llm.instance.requests[-1]
    assert messages[0].role == "system"
    return messages[0].content


def test_enroll_list_identify_cli(config_file: Path, capsys: pytest.CaptureFixture[str]):
    assert (
        cli.main(
            ["voiceprint", "enroll", "-c", str(config_file), "alice", str(DATA / "en-us_1.wav")]
        )
        == 0
    )
    assert cli.main(["voiceprint", "list", "-c", str(config_file)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "alice"
    assert (
        cli.main(["voiceprint", "identify", "-c", str(config_file), str(DATA / "en-us_2.wav")]) == 0
    )
    assert capsys.readouterr().out.splitlines()[-1].startswith("alice (score")
    assert (
        cli.main(
            ["voiceprint", "identify", "-c", str(config_file), str(DATA / "en-us+klatt_1.wav")]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[-1].startswith("unknown (score")
    assert cli.main(["voiceprint", "remove", "-c", str(config_file), "alice"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "removed 'alice'"
    assert cli.main(["voiceprint", "remove", "-c", str(config_file), "alice"]) == 1
    assert cli.main(["voiceprint", "list", "-c", str(config_file)]) == 0
    assert "alice" not in capsys.readouterr().out.splitlines()


def test_enroll_without_voiceprint_section_is_a_clear_error(tmp_path: Path, capsys):
    path = tmp_path / "novp.yaml"
    path.write_text(
        "vad: {provider: fake}\nasr: {provider: fake}\nllm: {provider: fake}\n"
        "tts: {provider: fake}\nstore: {enabled: false}\n"
    )
    assert cli.main(["voiceprint", "list", "-c", str(path)]) == 2
    assert "voiceprint: selects no voiceprint provider" in capsys.readouterr().err


def test_identified_speaker_reaches_the_llm(config_file: Path):
    assert (
        cli.main(
            ["voiceprint", "enroll", "-c", str(config_file), "Alice", str(DATA / "en-us_1.wav")]
        )
        == 0
    )

    async def scenario() -> tuple[str, str]:
        server = await XiaozhiServer.create(
            load_config([config_file], default_registry(), auto_local=False)
        )
        await server.start()
        try:
            same = await spoken_turn(server, DATA / "en-us_2.wav")
            other = await spoken_turn(server, DATA / "en+f3_2.wav")  # another voice
            return same, other
        finally:
            await server.stop()

    same, other = asyncio.run(scenario())
    assert "The user speaking is Alice." in same
    assert "Alice" not in other
