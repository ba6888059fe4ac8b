"""Deployment configs: precise errors (file, key path, allowed values), ${VAR}
expansion, deep merge of several files, local.yaml, and the auth default."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import xiaozhi_core.testing
from xiaozhi_core.config import load_config
from xiaozhi_core.errors import ConfigError
from xiaozhi_core.registry import Registry

ROLES = """
vad: {provider: fake}
asr: {provider: fake}
llm: {provider: fake}
tts: {provider: fake}
"""


@pytest.fixture
def registry() -> Registry:
    r = Registry()
    r.register(xiaozhi_core.testing)
    return r


def write(path: Path, *parts: str) -> Path:
    path.write_text("".join(textwrap.dedent(p) for p in parts))
    return path


def error_of(registry: Registry, *paths: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(list(paths), registry, env=env if env is not None else {})
    return err.value


# ------------------------------------------------------------------ errors
def test_unknown_top_level_key(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "sever: {port: 1}\n")
    err = error_of(registry, f)
    assert (err.file, err.path) == (str(f), "sever")
    assert err.message == (
        "unknown key 'sever' (did you mean 'server'?); allowed keys: "
        "server, executor, session, ota, vad, asr, llm, tts, voiceprint, "
        "vision, memory, store, profiles, devices"
    )
    assert str(err).startswith(f"{f}: sever: unknown key 'sever'")


def test_unknown_option_key_lists_the_allowed_ones(tmp_path: Path, registry: Registry) -> None:
    f = write(
        tmp_path / "a.yaml",
        ROLES.replace("asr: {provider: fake}", "asr: {provider: fake, options: {txt: hi}}"),
    )
    err = error_of(registry, f)
    assert (err.file, err.path) == (str(f), "asr.options.txt")
    assert err.message == (
        "unknown key 'txt' (did you mean 'text'?); allowed keys: delay, "
        "fail, language, record, text"
    )


def test_unknown_nested_server_key(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "server: {limits: {max_session: 3}}\n")
    err = error_of(registry, f)
    assert err.path == "server.limits.max_session"
    assert "(did you mean 'max_sessions'?)" in err.message
    assert (
        "audio_queue_frames, max_audio_speed, max_connections_per_peer, max_frame_bytes, "
        "max_loop_lag_ms" in err.message
    )


def test_wrong_type(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "session: {history_chars: lots}\n")
    err = error_of(registry, f)
    assert (err.path, err.message) == ("session.history_chars", "expected an integer, got 'lots'")
    f = write(tmp_path / "b.yaml", ROLES + "server: {auth: {tokens: abc}}\n")
    assert (error_of(registry, f).path, error_of(registry, f).message) == (
        "server.auth.tokens",
        "expected a list, got a string",
    )


def test_literal_value_not_allowed(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "executor: {kind: gpu}\n")
    err = error_of(registry, f)
    assert (err.path, err.message) == (
        "executor.kind",
        "'gpu' is not allowed; allowed: 'thread', 'process', 'ray'",
    )


def test_settings_validation_errors_keep_their_path(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "server: {port: 70000}\n")
    err = error_of(registry, f)
    assert (err.path, err.message) == ("server.port", "must be a TCP port 0..65535, got 70000")


def test_opus_complexity_is_checked_and_reaches_the_encoder(
    tmp_path: Path, registry: Registry
) -> None:
    from xiaozhi_core.protocol.opus import OpusEncoder

    f = write(tmp_path / "a.yaml", ROLES + "session: {opus_complexity: 11}\n")
    err = error_of(registry, f)
    assert (err.path, err.message) == (
        "session.opus_complexity",
        "must be an Opus complexity 0..10, got 11",
    )
    f = write(tmp_path / "b.yaml", ROLES + "session: {opus_complexity: 3}\n")
    assert load_config([str(f)], registry, env={}).session.opus_complexity == 3
    assert OpusEncoder(24000, 60, complexity=3)._encoder.complexity == 3
    default = OpusEncoder(24000, 60)._encoder.complexity  # libopus's own (9)
    assert OpusEncoder(24000, 60, complexity=None)._encoder.complexity == default


def test_provider_not_installed_lists_installed_ones(tmp_path: Path, registry: Registry) -> None:
    f = write(
        tmp_path / "a.yaml", ROLES.replace("asr: {provider: fake}", "asr: {provider: whisperx}")
    )
    err = error_of(registry, f)
    assert (err.file, err.path) == (str(f), "asr.provider")
    assert err.message == (
        "asr provider 'whisperx' is not installed; installed asr providers: fake, fake_io"
    )


def test_missing_required_role(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES.replace("tts: {provider: fake}\n", ""))
    err = error_of(registry, f)
    assert err.path == "tts"
    assert err.message == (
        "is required: choose a provider, e.g. 'tts: {provider: NAME}'; "
        "installed tts providers: fake, fake_io"
    )
    f = write(tmp_path / "b.yaml", ROLES.replace("tts: {provider: fake}", "tts: {options: {}}"))
    err = error_of(registry, f)
    assert (err.path, err.message) == (
        "tts.provider",
        "is required; installed tts providers: fake, fake_io",
    )


def test_error_names_the_file_that_set_the_bad_value(tmp_path: Path, registry: Registry) -> None:
    base = write(tmp_path / "base.yaml", ROLES)
    override = write(tmp_path / "override.yaml", "llm: {options: {first_token_delay: soon}}\n")
    err = error_of(registry, base, override)
    assert (err.file, err.path) == (str(override), "llm.options.first_token_delay")


def test_invalid_yaml_and_missing_file(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", "vad: [unclosed\n")
    err = error_of(registry, f)
    assert err.file == str(f) and err.message.startswith("invalid YAML")
    err = error_of(registry, tmp_path / "missing.yaml")
    assert err.file == str(tmp_path / "missing.yaml") and "cannot read config" in err.message


# ------------------------------------------------------------------ ${VAR}
def test_env_expansion_with_and_without_default(tmp_path: Path, registry: Registry) -> None:
    f = write(
        tmp_path / "a.yaml",
        ROLES.replace(
            "asr: {provider: fake}",
            "asr: {provider: fake, "
            "options: {text: '${GREETING} ${NAME:-world}', delay: '${ASR_DELAY:-0.5}'}}",
        ),
        """
        server:
          host: ${HOST:-0.0.0.0}
          port: ${PORT}
          auth: {enabled: "${AUTH:-auto}", secret: "${SECRET}"}
        session: {tts_voice: "${VOICE:-}", greeting: "$${NOT_A_VAR}"}
        """,
    )
    env = {"GREETING": "hello", "PORT": "9100", "SECRET": "0123", "AUTH": "false"}
    cfg = load_config([f], registry, env=env)
    assert cfg.asr.options.text == "hello world"
    assert cfg.asr.options.delay == 0.5
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 9100)
    # a secret that looks like a number keeps its exact text (YAML would read 0123 as 83)
    assert cfg.server.auth.secret == "0123" and type(cfg.server.auth.secret) is str
    assert cfg.server.auth.enabled is False
    assert cfg.session.tts_voice is None  # empty default for an optional value
    assert cfg.session.greeting == "${NOT_A_VAR}"


def test_unset_variable_names_the_variable_and_key_path(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "server: {auth: {secret: '${XZ_SECRET}'}}\n")
    err = error_of(registry, f, env={})
    assert (err.file, err.path) == (str(f), "server.auth.secret")
    assert err.message == (
        "environment variable XZ_SECRET is not set (set it, or write ${XZ_SECRET:-default})"
    )


def test_env_value_of_the_wrong_type(tmp_path: Path, registry: Registry) -> None:
    f = write(tmp_path / "a.yaml", ROLES + "server: {port: '${PORT}'}\n")
    err = error_of(registry, f, env={"PORT": "eighty"})
    assert (err.path, err.message) == ("server.port", "expected an integer, got 'eighty'")


def test_env_from_the_process_environment(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XZ_TEST_LLM_REPLY", "from the environment")
    f = write(
        tmp_path / "a.yaml",
        ROLES.replace(
            "llm: {provider: fake}",
            "llm: {provider: fake, options: {reply: '${XZ_TEST_LLM_REPLY}'}}",
        ),
    )
    assert load_config([f], registry).llm.options.reply == "from the environment"


# ------------------------------------------------------------------ merging
def test_several_files_deep_merge_in_order(tmp_path: Path, registry: Registry) -> None:
    a = write(
        tmp_path / "a.yaml",
        ROLES,
        """
        server: {host: 0.0.0.0, port: 8000, auth: {tokens: [a, b], token_ttl: 60}}
        session: {wake_words: [xiaozhi]}
        """,
    )
    b = write(
        tmp_path / "b.yaml",
        """
        server: {port: 9000, auth: {tokens: [c]}}
        asr: {options: {text: from b}}
        llm: {provider: fake_io}
        """,
    )
    cfg = load_config([a, b], registry)
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 9000)  # mapping merged key by key
    assert cfg.server.auth.tokens == ["c"]  # lists are replaced, not appended
    assert cfg.server.auth.token_ttl == 60
    assert cfg.session.wake_words == ["xiaozhi"]
    assert (cfg.asr.provider, cfg.asr.options.text) == ("fake", "from b")
    assert cfg.llm.provider == "fake_io" and cfg.llm.spec.execution.value == "io"
    assert cfg.files == [str(a), str(b)]


def test_selecting_another_provider_drops_the_earlier_options(
    tmp_path: Path, registry: Registry
) -> None:
    base = write(
        tmp_path / "a.yaml",
        ROLES.replace(
            "llm: {provider: fake}", "llm: {provider: fake, options: {reply: hi, fail_after: 3}}"
        ),
    )
    same = write(tmp_path / "b.yaml", "llm: {provider: fake, options: {reply: hello}}\n")
    other = write(tmp_path / "c.yaml", "tts: {provider: fake_io, options: {freq: 220}}\n")
    cfg = load_config([base, same, other], registry)
    assert (cfg.llm.options.reply, cfg.llm.options.fail_after) == ("hello", 3)
    assert cfg.tts.provider == "fake_io" and cfg.tts.options.freq == 220
    base2 = write(
        tmp_path / "d.yaml",
        ROLES.replace("asr: {provider: fake}", "asr: {provider: fake, options: {text: hi}}"),
    )
    switch = write(tmp_path / "e.yaml", "asr: {provider: fake_io}\n")
    cfg = load_config([base2, switch], registry)
    assert cfg.asr.provider == "fake_io" and cfg.asr.options.text == "hello"  # the default


def test_local_yaml_beside_the_first_file_is_merged_last(
    tmp_path: Path, registry: Registry
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    a = write(configs / "default.yaml", ROLES + "server: {port: 8000}\n")
    b = write(tmp_path / "other.yaml", "server: {port: 8100, http_port: 8101}\n")
    local = write(configs / "local.yaml", "server: {port: 8200}\n")
    cfg = load_config([a, b], registry)
    assert cfg.files == [str(a), str(b), str(local)]
    assert (cfg.server.port, cfg.server.http_port) == (8200, 8101)
    assert load_config([a, b], registry, auto_local=False).server.port == 8100
    # named explicitly: read once, in the given position
    assert load_config([a, local, b], registry).files == [str(a), str(local), str(b)]
    # errors in local.yaml name it
    write(local, "server: {port: many}\n")
    assert error_of(registry, a).file == str(local)


# ------------------------------------------------------------------ auth default
@pytest.mark.parametrize(
    ("host", "enabled", "expected"),
    [
        ("127.0.0.1", "auto", False),
        ("localhost", "auto", False),
        ("::1", "auto", False),
        ("0.0.0.0", "auto", True),
        ("", "auto", True),
        ("192.168.1.5", "auto", True),
        ("myserver.lan", "auto", True),
        ("0.0.0.0", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_auth_auto_is_on_for_non_loopback_hosts(
    tmp_path: Path, registry: Registry, host: str, enabled: Any, expected: bool
) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(ROLES)
    cfg = load_config([f], registry)
    assert cfg.server.host == "127.0.0.1" and cfg.server.auth_enabled is False  # the default
    cfg.server.host = host
    cfg.server.auth.enabled = enabled
    assert cfg.server.auth_enabled is expected
