"""Profiles ("agents") as sessions use them, and the book that lets a config reload
reach new turns without touching running ones.

A :class:`Profile` is a named profile of ``profiles:`` with every unset key filled in
from ``session:``. A :class:`ProfileSet` is everything a turn needs to pick its profile:
the profiles, the default, and the ``devices:`` mapping of one config. The
:class:`ProfileBook` holds the current set; the server builds a new set from a reloaded
config (validated first, so a broken one never replaces the running one) and swaps it in
with one assignment. The frozen :class:`~xiaozhi_core.session.host.SessionHost` keeps
the same book, and every turn resolves its profile from ``book.current`` when it starts:
a reload applies to the next turn of every session, never to a turn under way.

Example:
    >>> from xiaozhi_core.testing import fake_config
    >>> config = fake_config(profiles={"kids": {"system_prompt": "Be gentle.",
    ...                                         "voice": "soft"}},
    ...                      devices={"AA:BB": "kids"})
    >>> book = ProfileBook(build_profiles(config))
    >>> book.current.resolve("aa:bb", None).system_prompt
    'Be gentle.'
    >>> book.current.resolve("cc:dd", None).name, book.current.resolve("cc:dd", "kids").voice
    ('default', 'soft')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import DeploymentConfig, ProfileSettings, SessionSettings
from ..errors import ConfigError
from .tools import SERVER_TOOLS

__all__ = ["DEFAULT", "Profile", "ProfileBook", "ProfileSet", "ToolPolicy", "build_profiles"]

#: The name of the profile made of the ``session:`` settings alone.
DEFAULT = "default"


@dataclass(frozen=True)
class ToolPolicy:
    """Which tools a turn may offer the LLM.

    >>> p = ToolPolicy(frozenset({"get_time"}), frozenset({"self.light.on"}))
    >>> p.allows_device("self.light.on"), p.allows_device("self.reboot")
    (True, False)
    >>> ToolPolicy(frozenset(), True).allows_device("anything")
    True
    """

    server: frozenset[str]
    #: True: every tool the device offers; else the allowed MCP names.
    device: bool | frozenset[str] = True

    def allows_device(self, mcp_name: str) -> bool:
        return self.device if isinstance(self.device, bool) else mcp_name in self.device


@dataclass(frozen=True)
class Profile:
    """A profile with every setting resolved."""

    name: str
    system_prompt: str
    voice: str | None
    language: str | None
    greeting: str
    goodbye: str
    #: Reply-length budget in characters (0: none).
    reply_chars: int
    tools: ToolPolicy
    #: Validated per-request options for the LLM / TTS provider (None: pass none).
    llm_options: object | None = None
    tts_options: object | None = None

    @property
    def prompt(self) -> str:
        """The system prompt, with the language stated when the profile sets one."""
        if self.language:
            return f"{self.system_prompt}\nAlways answer in this language: {self.language}."
        return self.system_prompt


@dataclass(frozen=True)
class ProfileSet:
    """The profiles of one config, and how a device finds its own."""

    profiles: dict[str, Profile]
    default: Profile
    #: Device id (lower case) → profile name, from ``devices:``.
    devices: dict[str, str]

    def resolve(self, device_id: str, stored: str | None) -> Profile:
        """The profile of ``device_id``: the one the store maps it to (when this config
        defines it), else ``devices:``, else the default."""
        if stored is not None and stored in self.profiles:
            return self.profiles[stored]
        mapped = self.devices.get(device_id.lower())
        if mapped is not None and mapped in self.profiles:
            return self.profiles[mapped]
        return self.default

    def names(self) -> list[str]:
        """The profile names a device can be mapped to."""
        return sorted(self.profiles)


def _tools(names: Iterable[str], path: str) -> frozenset[str]:
    out = frozenset(names)
    unknown = sorted(out - set(SERVER_TOOLS))
    if unknown:
        raise ConfigError(
            f"unknown server tool {unknown[0]!r}; available: {', '.join(sorted(SERVER_TOOLS))}",
            path=path,
        )
    return out


def _profile(
    name: str, p: ProfileSettings, s: SessionSettings, request: dict[str, object | None]
) -> Profile:
    path = f"profiles.{name}"
    device: bool | frozenset[str] = True
    if isinstance(p.device_tools, list):
        device = frozenset(p.device_tools)
    elif p.device_tools is not None:
        device = bool(p.device_tools)
    return Profile(
        name=name,
        system_prompt=s.system_prompt if p.system_prompt is None else p.system_prompt,
        voice=p.voice if p.voice is not None else s.tts_voice,
        language=p.language,
        greeting=s.greeting if p.greeting is None else p.greeting,
        goodbye=s.goodbye if p.goodbye is None else p.goodbye,
        reply_chars=p.reply_chars or 0,
        tools=ToolPolicy(
            _tools(
                s.server_tools if p.server_tools is None else p.server_tools, f"{path}.server_tools"
            ),
            device,
        ),
        llm_options=request.get("llm"),
        tts_options=request.get("tts"),
    )


def build_profiles(config: DeploymentConfig) -> ProfileSet:
    """Resolve a validated config's profiles. Raises :class:`ConfigError` (with the key
    path) for what only the session layer can check, e.g. an unknown server tool."""
    s = config.session
    profiles = {
        name: _profile(name, p, s, config.request_options.get(name, {}))
        for name, p in config.profiles.items()
    }
    if s.default_profile is not None:
        default = profiles[s.default_profile]
    else:
        default = profiles.get(DEFAULT) or Profile(
            DEFAULT,
            s.system_prompt,
            s.tts_voice,
            None,
            s.greeting,
            s.goodbye,
            0,
            ToolPolicy(_tools(s.server_tools, "session.server_tools")),
        )
    return ProfileSet(profiles, default, dict(config.devices))


class ProfileBook:
    """The current :class:`ProfileSet`; replaced as a whole on reload (one assignment,
    on the event loop, so a turn never sees half of one config and half of another)."""

    def __init__(self, current: ProfileSet) -> None:
        self.current = current

    def swap(self, new: ProfileSet) -> ProfileSet:
        """Make ``new`` current; returns the previous set."""
        old, self.current = self.current, new
        return old
