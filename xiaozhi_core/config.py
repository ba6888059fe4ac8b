"""YAML deployment configs → typed, validated settings.

A deployment is one or more YAML files, deep-merged in order (later files win; mappings
merge key by key, everything else is replaced). One exception: a later file that selects
a *different* provider for a role replaces that role's section, since the earlier
options belong to the earlier provider. A ``local.yaml`` beside the first file is merged
last when present, so operators can keep secrets and host tweaks out of git.
Strings may use ``${VAR}`` and ``${VAR:-default}``; ``$${`` is a literal ``${``. An
expanded value is a string (:class:`~xiaozhi_core.options.EnvStr`) that validation parses
as the option's type: ``port: ${PORT:-8000}`` is an int, ``api_key: ${KEY}`` keeps the
key's exact text even when it looks like a number.

Unknown keys are errors. Every error names the file, the key path and what is allowed.

Example:
    >>> import os, tempfile, textwrap
    >>> from xiaozhi_core.registry import Registry
    >>> import xiaozhi_core.testing
    >>> registry = Registry(); registry.register(xiaozhi_core.testing)
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "demo.yaml")
    >>> _ = open(path, "w").write(textwrap.dedent('''
    ...     server: {port: "${DEMO_PORT:-9000}"}
    ...     vad: {provider: fake}
    ...     asr: {provider: fake, options: {text: "hi"}}
    ...     llm: {provider: fake}
    ...     tts: {provider: fake}
    ... '''))
    >>> cfg = load_config([path], registry)
    >>> cfg.server.port, cfg.asr.options.text
    (9000, 'hi')
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, TypeVarTuple

import yaml

from .errors import ConfigError, did_you_mean
from .executor import ExecutorSettings, RayPlacement
from .language import (
    AUTO,
    BUILTIN_LANGUAGES,
    LanguageSettings,
    is_language_code,
    normalize_language,
)
from .options import EnvStr, validate_options
from .providers import ProviderSpec
from .registry import Registry
from .store.settings import StoreSettings
from .types import Role

__all__ = [
    "AdminSettings",
    "AuthSettings",
    "DeploymentConfig",
    "HttpSettings",
    "LanguageSettings",
    "LimitSettings",
    "MqttSettings",
    "OtaSettings",
    "ProfileSettings",
    "VisionSettings",
    "ProviderChoice",
    "ServerSettings",
    "SessionSettings",
    "TimeoutSettings",
    "check_config",
    "check_factory",
    "expand_env",
    "load_config",
    "merge",
]


# --------------------------------------------------------------------------- settings
@dataclass
class AuthSettings:
    """Device authentication (``server.auth``)."""

    #: ``auto``: on whenever the server listens on a non-loopback address.
    enabled: bool | Literal["auto"] = "auto"
    #: HMAC key for the tokens the OTA endpoint issues. Empty: a random key per process
    #: (tokens then stop working after a restart and devices fetch new ones via OTA).
    secret: str = ""
    #: Lifetime of an issued token, in seconds.
    token_ttl: int = 30 * 24 * 3600
    #: Static bearer tokens accepted as well (e.g. for browser clients).
    tokens: list[str] = field(default_factory=list)
    #: Device ids (MACs) allowed to connect; empty = any device with a valid token.
    allowed_devices: list[str] = field(default_factory=list)


#: Shortest admin token accepted (characters): a guessable token guards nothing.
ADMIN_TOKEN_MIN_CHARS = 16


@dataclass
class AdminSettings:
    """The operator console and its JSON API (``server.admin``, docs/api.md).

    Without a token every ``/api/v1/`` request is refused (401), from loopback too,
    unless ``open`` lets requests *from loopback* through without one.

    >>> AdminSettings(token="x" * 16).token_set
    True
    >>> AdminSettings(token="short")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: server.admin.token: must be at least 16 characters ...
    """

    #: Bearer token of the console and the API; use ``${XIAOZHI_ADMIN_TOKEN}``.
    token: str = ""
    #: Let requests from loopback (127.0.0.1, ::1) in without the token. Not behind a
    #: reverse proxy on the same host: its requests come from loopback.
    open: bool = False

    def __post_init__(self) -> None:
        if self.token and len(self.token) < ADMIN_TOKEN_MIN_CHARS:
            raise ConfigError(
                f"must be at least {ADMIN_TOKEN_MIN_CHARS} characters (e.g. `python3 -c "
                f'"import secrets; print(secrets.token_urlsafe(24))"`), got '
                f"{len(self.token)}",
                path="server.admin.token",
            )

    @property
    def token_set(self) -> bool:
        return bool(self.token)


@dataclass
class LimitSettings:
    """Admission control and resource bounds (``server.limits``)."""

    #: Sessions of devices that said hello.
    max_sessions: int = 256
    #: Connections still waiting for their hello, counted apart from max_sessions: when
    #: full, the oldest is closed to make room, so silent connections cannot lock out
    #: devices that do speak.
    max_pending_handshakes: int = 64
    #: Connections from one address (IP) still waiting for their hello (more: 503).
    max_pending_per_peer: int = 8
    #: Connections from one address in all (devices behind one NAT share an address).
    max_connections_per_peer: int = 128
    #: Largest WebSocket frame accepted (the firmware refuses frames over 65535 bytes).
    max_frame_bytes: int = 65535
    #: Frames the per-session audio lane buffers before back-pressure (~60 ms each).
    audio_queue_frames: int = 64
    #: Refuse new sessions while the event loop runs this late (ms); 0 disables.
    max_loop_lag_ms: float = 500.0
    #: Uploaded audio may arrive at most this many times faster than real time on
    #: average, after a burst of ``audio_burst_ms``; faster frames are dropped (counted in
    #: xiaozhi_audio_frames_dropped_total) and the device is told once.
    max_audio_speed: float = 1.5
    audio_burst_ms: int = 5000
    #: Close a device (1008) once it has sent this much audio beyond its allowance
    #: (forgiven at real-time speed): a flood, not jitter.
    audio_flood_ms: int = 5000
    #: Close a device that stops reading: its unacknowledged output has not drained for
    #: this many seconds while a reply is sent (ends the turn, cancels LLM and TTS);
    #: 0 disables.
    send_stall_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_audio_speed < 1:
            raise ConfigError(
                "must be at least 1 (real time)", path="server.limits.max_audio_speed"
            )


@dataclass
class HttpSettings:
    """The HTTP port (OTA, health, metrics): ``server.http``. Bounds what a client that
    sends slowly or not at all can hold."""

    #: Close a connection whose request headers are not complete this long after connect.
    header_timeout: float = 10.0
    #: Answer 408 when a request body has not arrived in full within this many seconds.
    body_timeout: float = 10.0
    #: Close a kept-alive connection idle this long (also bounds a later request's headers).
    keepalive_timeout: float = 15.0
    #: Concurrent HTTP connections; more are answered 503 and closed at once.
    max_connections: int = 256
    #: OTA requests per address: a burst of ``ota_burst``, then this many a minute (more:
    #: 429). A device calls OTA once per boot; with auth on, OTA hands out tokens.
    ota_per_minute: float = 12.0
    ota_burst: int = 10

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    "must be a positive number of seconds", path=f"server.http.{name}"
                )
        if self.max_connections < 1:
            raise ConfigError("must be at least 1", path="server.http.max_connections")


@dataclass
class TimeoutSettings:
    """Timeouts in seconds (``server.timeouts``)."""

    hello: float = 10.0
    #: Close a session after this long without voice (after a spoken goodbye).
    idle: float = 120.0
    #: Limit for one provider step (ASR result, first LLM token, first TTS audio...).
    provider: float = 30.0
    #: Limit for a device MCP request.
    mcp: float = 10.0


@dataclass
class MqttSettings:
    """The MQTT + UDP transport (``server.mqtt``): an embedded broker for JSON, one UDP
    port for the encrypted Opus. When enabled, OTA hands every device an ``mqtt`` block
    (per-device credentials signed with ``server.auth.secret``), which the firmware
    prefers over WebSocket."""

    #: Serve MQTT + UDP next to WebSocket (needs the ``[mqtt]`` extra).
    enabled: bool = False
    #: Where the broker and the UDP port listen; empty: ``server.host``.
    host: str = ""
    #: MQTT over plain TCP (the firmware uses TLS only on port 8883, so not that one).
    port: int = 1883
    #: The UDP port of the encrypted Opus datagrams (both directions).
    udp_port: int = 8884
    #: Host handed to devices (OTA ``endpoint``, hello ``udp.server``); empty: the
    #: listening host, or the OTA request's host when listening on 0.0.0.0.
    public_host: str = ""
    #: MQTT keep-alive the device is told to use, seconds.
    keepalive: int = 240
    #: Open MQTT connections before new ones are refused.
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("port", "udp_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(
                    f"must be a port 0..65535, got {value}", path=f"server.mqtt.{name}"
                )
        if self.port == 8883:
            raise ConfigError(
                "8883 makes the firmware use TLS, which the embedded broker "
                "does not serve; use e.g. 1883",
                path="server.mqtt.port",
            )
        if not 10 <= self.keepalive <= 3600:
            raise ConfigError(
                f"must be 10..3600 seconds, got {self.keepalive}", path="server.mqtt.keepalive"
            )


@dataclass
class VisionSettings:
    """MCP vision, the camera's photo upload (``server.vision``): served on the HTTP port
    at ``/mcp/vision/explain`` when a ``vision`` provider is selected."""

    #: Largest accepted photo (the firmware's JPEGs are tens of kB).
    max_image_bytes: int = 2 * 1024 * 1024
    #: An upload token lives as long as its session, and at most this long (seconds).
    token_ttl: float = 3600.0
    #: The explain URL handed to devices; empty: ``http://<host>:<http_port>/mcp/vision/
    #: explain`` with the host the device reaches this server at.
    public_url: str = ""


@dataclass
class ServerSettings:
    """``server:`` — where to listen and how devices are admitted."""

    host: str = "127.0.0.1"
    #: WebSocket port (``ws://HOST:PORT/xiaozhi/v1/``).
    port: int = 8000
    #: HTTP port for OTA, health and metrics.
    http_port: int = 8003
    #: WebSocket URL handed to devices by OTA; empty: derived from the request's host.
    public_ws_url: str = ""
    #: Worker processes sharing the ports (SO_REUSEPORT) under a supervising parent;
    #: ``auto``: one per usable core. 1 runs the server in this process, no supervisor.
    workers: int | Literal["auto"] = "auto"
    #: On SIGTERM: stop accepting, let running turns finish for up to this many
    #: seconds, then close the remaining sessions (close code 1012: reconnect).
    drain_timeout: float = 30.0
    auth: AuthSettings = field(default_factory=AuthSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        for name in ("port", "http_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(
                    f"must be a TCP port 0..65535, got {value}", path=f"server.{name}"
                )
        if self.workers != "auto" and not 1 <= self.workers <= 256:
            raise ConfigError(
                f"must be 1..256 or 'auto', got {self.workers}", path="server.workers"
            )
        if self.drain_timeout < 0:
            raise ConfigError(
                f"must be >= 0 seconds, got {self.drain_timeout:g}", path="server.drain_timeout"
            )
        if self.mqtt.enabled and self.workers not in ("auto", 1):
            raise ConfigError(
                f"must be 1 (or auto) with server.mqtt enabled, got "
                f"{self.workers}: a device's MQTT session and its UDP audio "
                "must reach the same process",
                path="server.workers",
            )

    @property
    def worker_count(self) -> int:
        """Worker processes to run: ``workers``, or one per usable core for ``auto``.

        >>> ServerSettings(workers=3).worker_count
        3
        >>> ServerSettings(mqtt=MqttSettings(enabled=True)).worker_count  # one process
        1
        """
        if self.workers != "auto":
            return int(self.workers)
        if self.mqtt.enabled:
            return 1
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    @property
    def auth_enabled(self) -> bool:
        if self.auth.enabled != "auto":
            return bool(self.auth.enabled)
        return not _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class OtaSettings:
    """``ota:`` — what the OTA endpoint tells devices besides where to connect."""

    #: Folder of firmware builds named ``{board}_{version}.bin`` (board = the firmware's
    #: BOARD_TYPE, e.g. ``bread-compact-wifi_1.7.2.bin``); a device running an older
    #: version of its board gets the newest one's download URL. Empty: no updates.
    firmware_dir: str = ""
    #: IANA time zone of the ``server_time`` devices set their clock from, e.g.
    #: ``Asia/Shanghai``; empty: the server machine's local zone.
    timezone: str = ""
    #: Require activation: an unknown device is told a 6-digit code and gets no
    #: credentials (and cannot connect) until ``xiaozhi activation confirm CODE``.
    activation: bool = False
    #: Where activated and pending devices are kept (relative: to the first config file).
    devices_file: str = "devices.json"

    def __post_init__(self) -> None:
        if self.timezone:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    f"unknown time zone {self.timezone!r} (an IANA name such "
                    "as Europe/Berlin or Asia/Shanghai)",
                    path="ota.timezone",
                ) from None


@dataclass
class SessionSettings:
    """``session:`` — conversation behaviour."""

    system_prompt: str = (
        "You are Xiaozhi, a friendly voice assistant. Answer in one or two short sentences."
    )
    #: History kept for the LLM, in characters (oldest turns are dropped first).
    history_chars: int = 4000
    #: Downstream (server → device) Opus sample rate announced in the server hello
    #: (a rate Opus encodes: 8, 12, 16, 24 or 48 kHz).
    output_sample_rate: Literal[8000, 12000, 16000, 24000, 48000] = 24000
    #: Downstream Opus frame duration (ms); the firmware plays 10 to 60.
    output_frame_ms: Literal[10, 20, 40, 60] = 60
    #: Opus encoder complexity of the reply audio, 0..10 (null: libopus's default, 9).
    #: Speech at 24 kHz costs ~0.55 ms of CPU per 60 ms frame at 8..10 (SILK/hybrid:
    #: ~0.9 % of a core per speaking device); 7 costs ~0.44 ms (PESQ-WB 3.86 instead of
    #: 4.0); 6 and below switch to CELT-only at ~0.04-0.1 ms but PESQ-WB drops to ~2.5
    #: (bench/benchmarks/bench_opus_encode.py).
    opus_complexity: int | None = None
    #: Frames sent before pacing starts, and the most audio sent ahead of real time.
    prebuffer_frames: int = 3
    max_ahead_ms: int = 1500
    #: Utterance segmentation. Each of these, when left unset (null), is taken from the
    #: VAD provider's options of the same meaning (e.g. silero's ``threshold``,
    #: ``release_threshold``, ``min_speech_ms``, ``min_silence_ms``, ``pre_roll_ms``),
    #: else from the built-in default (0.5, 0.35, 700, 250, 300). Set here, they win.
    #: Speech starts at ``vad_threshold`` and continues while the probability stays at
    #: or above ``vad_release_threshold`` (hysteresis).
    vad_threshold: float | None = None
    vad_release_threshold: float | None = None
    #: End of utterance after this much unvoiced audio (audio time).
    silence_ms: int | None = None
    #: Ignore speech shorter than this (clicks, coughs).
    min_speech_ms: int | None = None
    #: Audio kept before the detected speech start, so the first syllable survives.
    pre_roll_ms: int | None = None
    #: Longest utterance; ended (and recognised) when reached.
    max_utterance_ms: int = 30000
    #: VAD batch tick: windows of all sessions gathered this long go in one call.
    vad_tick_ms: int = 10
    #: The language the session speaks: ``en``, ``zh`` or any key of ``languages``
    #: (region suffixes such as ``zh-CN`` are dropped). It selects the ASR's language,
    #: the TTS voice, the greeting/goodbye/apology and the language the system prompt
    #: asks for. ``auto``: no language hint to the ASR; each reply follows the language
    #: the ASR detected (typed text: its script), in that language's voice. Null: as
    #: before languages existed (no hint, no prompt line, the configured voice).
    language: str | None = None
    #: Per-language phrases, voice and wake words, over the built-in ``en`` and ``zh``
    #: (or new languages): ``{zh: {greeting, goodbye, apology, voice, wake_words, name}}``.
    languages: dict[str, LanguageSettings] = field(default_factory=dict)
    #: Spoken on the wake word. Null: the greeting of the wake word's language
    #: (``languages``, else built in). Set, it is the greeting of ``language`` (of every
    #: language when ``language`` is null or ``auto``), unless ``languages`` sets one.
    greeting: str | None = None
    #: Spoken before an idle session closes (null: the session language's; as greeting).
    goodbye: str | None = None
    #: Words that are only a wake word (``listen detect`` with these gets a greeting),
    #: besides every language's ``wake_words``.
    wake_words: list[str] = field(
        default_factory=lambda: ["你好小智", "小智", "hi xiaozhi", "hey xiaozhi", "xiaozhi"]
    )
    #: Spoken and shown when a turn fails (null: the session language's; as greeting).
    apology: str | None = None
    tts_voice: str | None = None
    #: Server-side tools offered to the LLM.
    server_tools: list[str] = field(default_factory=lambda: ["get_time"])
    #: Most tool-call rounds in one turn.
    max_tool_rounds: int = 3
    #: The profile of devices mapped to none (a name under ``profiles:``); null: these
    #: ``session:`` settings themselves.
    default_profile: str | None = None

    def __post_init__(self) -> None:
        if self.opus_complexity is not None and not 0 <= self.opus_complexity <= 10:
            raise ConfigError(
                f"must be an Opus complexity 0..10, got {self.opus_complexity}",
                path="session.opus_complexity",
            )
        table: dict[str, LanguageSettings] = {}
        for key, value in self.languages.items():
            code = normalize_language(key)
            if code is None or code == AUTO or not is_language_code(code):
                raise ConfigError(
                    f"{key!r} is not a language code; use a code such as 'en' or 'zh'",
                    path=f"session.languages.{key}",
                )
            table[code] = value
        self.languages = table
        self.language = self.check_language(self.language, "session.language")

    def known_languages(self) -> list[str]:
        """The codes a ``language`` may name: the built-in ones and ``languages``'.

        >>> SessionSettings(languages={"fr": LanguageSettings()}).known_languages()
        ['en', 'fr', 'zh']
        """
        return sorted({*BUILTIN_LANGUAGES, *self.languages})

    def _suggest(self, word: str, known: list[str]) -> str:
        """The closest code to ``word``: by spelling, by a language's name ("Chinese"),
        or the one code of the same length and first letter ("zn" → "zh")."""
        names = {"chinese": "zh", "mandarin": "zh", "中文": "zh", "english": "en"}
        for code in self.known_languages():
            lang = BUILTIN_LANGUAGES.get(code, LanguageSettings()).overlay(
                self.languages.get(code, LanguageSettings())
            )
            if lang.name:
                names[lang.name.lower()] = code
        if word in names and names[word] in known:
            return f" (did you mean {names[word]!r}?)"
        close = did_you_mean(word, known)
        alike = [k for k in known if len(k) == len(word) and k[0] == word[0]]
        return close or (f" (did you mean {alike[0]!r}?)" if len(alike) == 1 else "")

    def check_language(self, value: str | None, path: str, *, auto: bool = True) -> str | None:
        """``value`` normalised (``zh-CN`` → ``zh``), or a ConfigError naming the known
        languages and the closest one.

        >>> SessionSettings().check_language("zh_CN", "x")
        'zh'
        >>> SessionSettings().check_language("zn", "profiles.kids.language")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xiaozhi_core.errors.ConfigError: profiles.kids.language: unknown language 'zn' (did you ...
        """
        code = normalize_language(value)
        if code is None or code in self.known_languages() or (auto and code == AUTO):
            return code
        known = [AUTO, *self.known_languages()] if auto else self.known_languages()
        raise ConfigError(
            f"unknown language {value!r}{self._suggest(code, known)}; known: "
            f"{', '.join(known)} (add one under session.languages)",
            path=path,
        )


@dataclass
class ProfileSettings:
    """One named profile ("agent") under ``profiles:``. Every key left out (null) is
    taken from ``session:``; a device gets its profile from the store (set with
    ``xiaozhi devices set-profile`` or the API), else from ``devices:``, else
    ``session.default_profile``.

    Example::

        profiles:
          kids:
            system_prompt: "You talk with a child. Short, kind sentences."
            voice: zh-CN-XiaoyiNeural
            language: zh
            reply_chars: 200
            server_tools: []
            device_tools: [self.audio_speaker.set_volume]
            llm: {model: qwen-turbo, temperature: 0.3}
            tts: {speed: 0.9}
        devices:
          "aa:bb:cc:dd:ee:ff": kids
    """

    #: The LLM's system prompt (``session.system_prompt``).
    system_prompt: str | None = None
    #: TTS voice (``session.tts_voice``).
    voice: str | None = None
    #: The profile's language (``session.language``): ASR language, voice, phrases and
    #: the language the system prompt asks for; ``auto`` follows the speaker.
    language: str | None = None
    #: Spoken on the wake word (``session.greeting``).
    greeting: str | None = None
    #: Spoken before an idle session closes (``session.goodbye``).
    goodbye: str | None = None
    #: Reply-length budget in characters: the reply stops at the first sentence end
    #: past it (null or 0: no limit).
    reply_chars: int | None = None
    #: Server-side tools offered to the LLM (``session.server_tools``).
    server_tools: list[str] | None = None
    #: Device (MCP) tools offered to the LLM: true all, false none, or a list of names.
    device_tools: bool | list[str] | None = None
    #: Per-request LLM options the LLM provider declares (e.g. ``model``, ``temperature``).
    llm: dict[str, Any] = field(default_factory=dict)
    #: Per-request TTS options the TTS provider declares (e.g. ``speed``).
    tts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reply_chars is not None and self.reply_chars < 0:
            raise ValueError(f"reply_chars must be 0 (no limit) or more, got {self.reply_chars}")


@dataclass
class ProviderChoice:
    """A role's selection: the provider's spec and its validated options."""

    provider: str
    spec: ProviderSpec
    options: Any
    #: Where a ``cpu`` provider runs: None = the local pool, else a Ray Serve deployment.
    placement: RayPlacement | None = None


@dataclass
class DeploymentConfig:
    """A validated deployment."""

    files: list[str]
    server: ServerSettings
    executor: ExecutorSettings
    session: SessionSettings
    vad: ProviderChoice
    asr: ProviderChoice
    llm: ProviderChoice
    tts: ProviderChoice
    voiceprint: ProviderChoice | None
    raw: dict[str, Any]
    ota: OtaSettings = field(default_factory=OtaSettings)
    vision: ProviderChoice | None = None
    memory: ProviderChoice | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    #: Named profiles (``profiles:``), validated.
    profiles: dict[str, ProfileSettings] = field(default_factory=dict)
    #: Per-request provider options of each profile, validated against the providers'
    #: ``request_options`` (``{profile: {"llm": obj, "tts": obj}}``, None when unset).
    request_options: dict[str, dict[str, object | None]] = field(default_factory=dict)
    #: Device id (lower case) → profile name (``devices:``).
    devices: dict[str, str] = field(default_factory=dict)

    def choices(self) -> dict[Role, ProviderChoice]:
        out = {Role.VAD: self.vad, Role.ASR: self.asr, Role.LLM: self.llm, Role.TTS: self.tts}
        if self.voiceprint is not None:
            out[Role.VOICEPRINT] = self.voiceprint
        if self.vision is not None:
            out[Role.VISION] = self.vision
        if self.memory is not None:
            out[Role.MEMORY] = self.memory
        return out


# --------------------------------------------------------------------------- loading
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value``.

    >>> expand_env({"k": "${NOPE_UNSET:-x}-${HOME_TEST}"}, env={"HOME_TEST": "h"})
    {'k': 'x-h'}
    >>> expand_env({"key": "${NOPE_UNSET}"}, env={})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ConfigError: key: environment variable NOPE_UNSET is not set (set it, ...
    """
    env = os.environ if env is None else env
    if isinstance(value, str):
        if "$" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set (set it, or write ${{{name}:-default}})",
                path=path,
            )

        out = _ENV_RE.sub(sub, value)
        if value.replace("$${", "").find("${") < 0:
            return out  # only escapes: a plain string
        return EnvStr(out)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``.

    >>> merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]})
    {'a': {'x': 1, 'y': 3}, 'l': [2]}
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _record_origins(data: object, file: str, prefix: str, origins: dict[str, str]) -> None:
    origins[prefix] = file
    if isinstance(data, Mapping):
        for k, v in data.items():
            _record_origins(v, file, f"{prefix}.{k}" if prefix else str(k), origins)


def _origin_of(path: str, origins: dict[str, str]) -> str | None:
    probe = path
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""
    return origins.get("")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping (empty file → ``{}``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", file=str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(p)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", file=str(p))
    return data


_TOP_KEYS = (
    "server",
    "executor",
    "session",
    "ota",
    "vad",
    "asr",
    "llm",
    "tts",
    "voiceprint",
    "vision",
    "memory",
    "store",
    "profiles",
    "devices",
)
_REQUIRED_ROLES = (Role.VAD, Role.ASR, Role.LLM, Role.TTS)


def config_files(paths: Sequence[str | Path]) -> list[str]:
    """The files a deployment reads: the given ones, plus ``local.yaml`` beside the first."""
    files = [str(p) for p in paths]
    if files:
        local = Path(files[0]).parent / "local.yaml"
        if local.exists() and all(Path(f).resolve() != local.resolve() for f in files):
            files.append(str(local))
    return files


def load_config(
    paths: Sequence[str | Path],
    registry: Registry,
    env: Mapping[str, str] | None = None,
    *,
    auto_local: bool = True,
) -> DeploymentConfig:
    """Read, merge, expand and validate a deployment. Raises :class:`ConfigError`."""
    raw, files, origins = _read_merged(paths, env, auto_local)
    try:
        return _validate(raw, registry, files)
    except ConfigError as exc:
        raise exc.with_file(_origin_of(exc.path, origins) or files[-1]) from None


def check_config(
    paths: Sequence[str | Path],
    registry: Registry,
    env: Mapping[str, str] | None = None,
    *,
    auto_local: bool = True,
    build_check: bool = True,
) -> tuple[DeploymentConfig | None, list[ConfigError]]:
    """Validate a deployment like :func:`load_config`, but collect *every* error (one per
    section and role) instead of stopping at the first. With ``build_check``, also
    import each selected provider's factory, check its execution policy and run its
    optional ``check_options(options)`` (e.g. espeak's voice against the installed
    voices) — what ``serve --check`` would find, without loading any model.

    Returns the config (``None`` when anything is wrong) and the errors.
    """
    raw, files, origins = _read_merged(paths, env, auto_local)
    errors: list[ConfigError] = []

    def attempt(fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T | None:
        try:
            return fn(*args)
        except ConfigError as exc:
            errors.append(exc.with_file(_origin_of(exc.path, origins) or files[-1]))
            return None

    config = _check_all(raw, registry, files, attempt, build_check=build_check)
    return (None, errors) if errors else (config, [])


class _Attempt(Protocol):
    """How :func:`_validate` runs each check: raise at the first error
    (:func:`_first_error`) or collect it and go on (``check_config``)."""

    def __call__(self, fn: Callable[[*_Ts], _T], /, *args: *_Ts) -> _T | None: ...


def _first_error(fn: Callable[[*_Ts], _T], /, *args: *_Ts) -> _T | None:
    return fn(*args)


def _raise(exc: Exception) -> None:
    raise exc


def check_factory(role: Role, choice: ProviderChoice) -> None:
    """Import ``choice``'s factory, check its execution policy and let it check its
    options (its optional ``check_options``), without building it. ConfigError naming
    the role's key otherwise."""
    from .errors import XiaozhiError
    from .executor import check_policy

    spec = choice.spec
    try:
        factory = spec.resolve_factory()
        if isinstance(factory, type):
            check_policy(spec, factory)
    except XiaozhiError as exc:
        raise ConfigError(str(exc), path=f"{role.value}.provider") from None
    check = getattr(factory, "check_options", None)
    if callable(check):
        try:
            check(choice.options)
        except (XiaozhiError, ValueError) as exc:
            message = exc.message if isinstance(exc, ConfigError) else str(exc)
            sub = exc.path if isinstance(exc, ConfigError) and exc.path else ""
            raise ConfigError(
                message, path=f"{role.value}.options" + (f".{sub}" if sub else "")
            ) from None


def _read_merged(
    paths: Sequence[str | Path], env: Mapping[str, str] | None, auto_local: bool
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """Read, expand and deep-merge the files: (raw mapping, files read, key → file)."""
    if not paths:
        raise ConfigError("no config file given (use -c configs/default.yaml)")
    files = config_files(paths) if auto_local else [str(p) for p in paths]
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for f in files:
        try:
            data = expand_env(read_yaml(f), env=env)
        except ConfigError as exc:
            raise exc.with_file(f) from None
        _record_origins(data, f, "", origins)
        for role in Role:
            new, old = data.get(role.value), raw.get(role.value)
            if (
                isinstance(new, dict)
                and isinstance(old, dict)
                and "provider" in new
                and new["provider"] != old.get("provider")
            ):
                del raw[role.value]  # a different provider: drop the old one's options
        raw = merge(raw, data)
    return raw, files, origins


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", path=key)
    return value


def _choice(
    raw: dict[str, Any], role: Role, registry: Registry, executor: ExecutorSettings | None = None
) -> ProviderChoice | None:
    key = role.value
    if key not in raw or raw[key] is None:
        if role in _REQUIRED_ROLES:
            installed = ", ".join(s.name for s in registry.specs(role)) or "(none)"
            raise ConfigError(
                f"is required: choose a provider, e.g. '{key}: {{provider: NAME}}'; "
                f"installed {role} providers: {installed}",
                path=key,
            )
        return None
    section = _section(raw, key)
    unknown = sorted(set(section) - {"provider", "options", "executor", "ray"})
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}; allowed keys: executor, options, provider, ray",
            path=f"{key}.{unknown[0]}",
        )
    name = section.get("provider")
    if not isinstance(name, str) or not name:
        installed = ", ".join(s.name for s in registry.specs(role)) or "(none)"
        raise ConfigError(
            f"is required; installed {role} providers: {installed}", path=f"{key}.provider"
        )
    try:
        spec = registry.get(role, name)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=f"{key}.provider") from None
    except Exception as exc:  # PluginError for duplicates
        raise ConfigError(str(exc), path=f"{key}.provider") from None
    options = section.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError("expected a mapping of provider options", path=f"{key}.options")
    validated = spec.validate(options, path=f"{key}.options")
    return ProviderChoice(
        str(name), spec, validated, _placement(section, role, spec, executor or ExecutorSettings())
    )


def _placement(
    section: dict[str, Any], role: Role, spec: ProviderSpec, executor: ExecutorSettings
) -> RayPlacement | None:
    """Where a role's provider runs: ``<role>.executor`` (local|ray), else
    ``executor.kind``; ``<role>.ray`` configures the Serve deployment."""
    key = role.value
    where = section.get("executor")
    if where is not None and where not in ("local", "ray"):
        raise ConfigError(
            f"{where!r} is not allowed; allowed: 'local', 'ray'", path=f"{key}.executor"
        )
    ray_raw = section.get("ray") or {}
    if not isinstance(ray_raw, dict):
        raise ConfigError("expected a mapping of Ray Serve deployment settings", path=f"{key}.ray")
    placement = validate_options(RayPlacement, ray_raw, path=f"{key}.ray")
    if where == "ray":
        if role is Role.VAD:
            raise ConfigError(
                "the VAD runs in the local pool (one call per 32 ms window of "
                "every stream); 'ray' is not supported here",
                path=f"{key}.executor",
            )
        if spec.execution.value != "cpu":
            raise ConfigError(
                f"provider {spec.name!r} is 'io' (it awaits network I/O on the "
                "event loop); only 'cpu' providers run on Ray",
                path=f"{key}.executor",
            )
        return placement
    if (
        where is None
        and executor.kind == "ray"
        and role is not Role.VAD
        and spec.execution.value == "cpu"
    ):
        return placement
    return None


def _validate(raw: dict[str, Any], registry: Registry, files: list[str]) -> DeploymentConfig:
    """Validate a merged raw deployment; ConfigError at the first failure."""
    config = _check_all(raw, registry, files, _first_error)
    assert config is not None  # _first_error raises instead of returning None
    return config


def _check_all(
    raw: dict[str, Any],
    registry: Registry,
    files: list[str],
    attempt: _Attempt,
    *,
    build_check: bool = False,
) -> DeploymentConfig | None:
    """Validate every section through ``attempt``. With :func:`_first_error` the first
    failure raises (:func:`_validate`); with a collecting ``attempt`` (``check_config``)
    every check runs and the result is None when a required part failed (the caller
    holds the errors). With ``build_check``, also :func:`check_factory` each selected
    provider."""
    for key in sorted(set(raw) - set(_TOP_KEYS)):
        attempt(
            _raise,
            ConfigError(
                f"unknown key {key!r}{did_you_mean(key, _TOP_KEYS)}; "
                f"allowed keys: {', '.join(_TOP_KEYS)}",
                path=key,
            ),
        )

    def section(cls: type[_T], key: str) -> _T | None:
        return attempt(lambda: validate_options(cls, _section(raw, key), path=key))

    server = section(ServerSettings, "server")
    executor = section(ExecutorSettings, "executor")
    session = section(SessionSettings, "session")
    ota = section(OtaSettings, "ota")
    store = section(StoreSettings, "store")
    choices = {role: attempt(_choice, raw, role, registry, executor) for role in Role}
    if build_check:
        for role, choice in choices.items():
            if choice is not None:
                attempt(check_factory, role, choice)
    if choices[Role.MEMORY] is not None and store is not None and not store.enabled:
        attempt(
            _raise,
            ConfigError(
                "needs the device store (store.enabled: true): memory is kept there",
                path="memory.provider",
            ),
        )
    llm, tts = choices[Role.LLM], choices[Role.TTS]
    profiles: dict[str, ProfileSettings] = {}
    request: dict[str, dict[str, object | None]] = {}
    for name, raw_profile in (attempt(_section, raw, "profiles") or {}).items():
        checked = attempt(_profile, name, raw_profile, session or SessionSettings(), llm, tts)
        if checked is not None:
            profiles[name], request[name] = checked
    default = session.default_profile if session is not None else None
    if default is not None and default not in profiles:
        attempt(
            _raise,
            ConfigError(
                f"unknown profile {default!r}; defined: {', '.join(profiles) or '(none)'}",
                path="session.default_profile",
            ),
        )
    devices: dict[str, str] = {}
    for device, name in (attempt(_section, raw, "devices") or {}).items():
        if not isinstance(name, str) or name not in profiles:
            attempt(
                _raise,
                ConfigError(
                    f"unknown profile {name!r}; defined: {', '.join(profiles) or '(none)'}",
                    path=f"devices.{device}",
                ),
            )
            continue
        devices[str(device).strip().lower()] = name
    vad, asr = choices[Role.VAD], choices[Role.ASR]
    if (
        server is None
        or executor is None
        or session is None
        or ota is None
        or store is None
        or vad is None
        or asr is None
        or llm is None
        or tts is None
    ):
        return None
    return DeploymentConfig(
        files,
        server,
        executor,
        session,
        vad,
        asr,
        llm,
        tts,
        choices[Role.VOICEPRINT],
        raw,
        ota,
        choices[Role.VISION],
        memory=choices[Role.MEMORY],
        store=store,
        profiles=profiles,
        request_options=request,
        devices=devices,
    )


def _profile(
    name: object,
    section: object,
    session: SessionSettings,
    llm: ProviderChoice | None,
    tts: ProviderChoice | None,
) -> tuple[ProfileSettings, dict[str, object | None]]:
    """One ``profiles:`` entry, validated: the profile and its per-request options."""
    path = f"profiles.{name}"
    if not isinstance(name, str) or not _PROFILE_RE.match(name):
        raise ConfigError(
            "a profile name is letters, digits, '_', '-' or '.' (at most 64)", path=path
        )
    if not isinstance(section, dict):
        raise ConfigError(f"expected a mapping, got {type(section).__name__}", path=path)
    profile = validate_options(ProfileSettings, section, path=path)
    profile.language = session.check_language(profile.language, f"{path}.language")
    request: dict[str, object | None] = {
        "llm": llm.spec.validate_request(profile.llm, path=f"{path}.llm") if llm else None,
        "tts": tts.spec.validate_request(profile.tts, path=f"{path}.tts") if tts else None,
    }
    return profile, request


_PROFILE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
