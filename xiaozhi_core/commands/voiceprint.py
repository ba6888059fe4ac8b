"""``xiaozhi voiceprint enroll|list|identify|remove``: manage the speakers of the
voiceprint provider a deployment selects (works with any provider of the role).

With the device store on (``store.enabled``, the default) the voices are kept in the
store, where every worker and host of the deployment finds them (the server shares them
the same way, see :mod:`xiaozhi_core.session.voices`); the store's location is printed.
Without a store they are the provider's own (e.g. resemblyzer's ``store_dir``).

Example (with the fake voiceprint provider)::

    xiaozhi voiceprint enroll -c configs/default.yaml alice alice1.wav alice2.wav
    xiaozhi voiceprint identify -c configs/default.yaml unknown.wav
    xiaozhi voiceprint remove -c configs/default.yaml alice
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np

from ..command import Command, CommandGroup
from ..errors import ConfigError
from ._deployment import add_config_option, load_deployment

if TYPE_CHECKING:
    from ..providers import BoundVoiceprint
    from ..types import SpeakerMatch

T = TypeVar("T")

__all__: list[str] = []


def _common(p: argparse.ArgumentParser) -> None:
    add_config_option(p, "deployment config(s) selecting a voiceprint provider")


async def _with_provider(
    args: argparse.Namespace, work: Callable[[BoundVoiceprint], Awaitable[T]]
) -> T:
    from ..executor import Executor, build
    from ..providers import BoundVoiceprint

    config = load_deployment(args.config)
    if config.voiceprint is None:
        raise ConfigError(
            "selects no voiceprint provider; add e.g. 'voiceprint: {provider: resemblyzer}'",
            path="voiceprint",
            file=config.files[0],
        )
    executor = Executor(config.executor)
    store = None
    try:
        provider = cast(
            BoundVoiceprint,
            await build(config.voiceprint.spec, config.voiceprint.options, executor),
        )
        try:
            if config.store.enabled:
                from ..session.voices import SharedVoiceprint
                from ..store import Store

                store = Store(config.store)
                await store.open(strict=True)
                print(f"store: {store.location}")
                shared = SharedVoiceprint(provider, store)
                await shared.resolve_model()
                provider = shared
            return await work(provider)
        finally:
            await provider.aclose()
            if store is not None:
                await store.close()
    finally:
        executor.shutdown(wait=False)


def _read(path: str) -> np.ndarray:
    from ..audio import read_wav

    try:
        return read_wav(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _enroll_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("name", help="the speaker's name (as the assistant should call them)")
    p.add_argument("wav", nargs="+", help="16-bit PCM WAV file(s) of the speaker, 3+ s each")


def _enroll(args: argparse.Namespace) -> int:
    async def work(provider: BoundVoiceprint) -> None:
        for path in args.wav:
            pcm = _read(path)
            await provider.enroll(args.name, pcm)
            print(f"enrolled {args.name!r} from {path} ({len(pcm) / 16000:.1f} s)")

    asyncio.run(_with_provider(args, work))
    return 0


def _list(args: argparse.Namespace) -> int:
    async def work(provider: BoundVoiceprint) -> list[str]:
        return list(await provider.speakers())

    for name in asyncio.run(_with_provider(args, work)):
        print(name)
    return 0


def _identify_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("wav", help="a WAV file to identify")


def _identify(args: argparse.Namespace) -> int:
    async def work(provider: BoundVoiceprint) -> SpeakerMatch:
        return await provider.identify(_read(args.wav))

    match = asyncio.run(_with_provider(args, work))
    print(f"{match.name or 'unknown'} (score {match.score:.3f})")
    return 0


def _remove_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("name", help="the speaker to forget")


def _remove(args: argparse.Namespace) -> int:
    async def work(provider: BoundVoiceprint) -> int:
        from ..errors import ProviderError
        from ..types import Execution

        remove = getattr(provider, "remove", None)
        if remove is None and provider.instance is not None:
            remove = getattr(provider.instance, "remove", None)
            if remove is not None and provider.execution is Execution.CPU:
                return int(bool(await provider.executor.run(remove, args.name)))  # type: ignore[attr-defined]
        if remove is None:
            raise ProviderError(
                f"voiceprint provider {provider.name!r} cannot remove "
                "speakers; turn the store on (store.enabled) to manage them "
                "there"
            )
        result = remove(args.name)
        if asyncio.iscoroutine(result):
            result = await result
        return int(result)

    removed = asyncio.run(_with_provider(args, work))
    if not removed:
        print(f"{args.name!r} was not enrolled")
        return 1
    print(f"removed {args.name!r}")
    return 0


def commands() -> list[Command | CommandGroup]:
    """``xiaozhi voiceprint enroll|list|identify|remove`` (entry point ``voiceprint``)."""
    return [
        CommandGroup(("voiceprint",), "manage enrolled speakers"),
        Command(
            ("voiceprint", "enroll"), "enroll a named speaker from WAV files", _enroll, _enroll_args
        ),
        Command(("voiceprint", "list"), "list enrolled speakers", _list, _common),
        Command(
            ("voiceprint", "identify"),
            "identify the speaker of a WAV file",
            _identify,
            _identify_args,
        ),
        Command(("voiceprint", "remove"), "forget an enrolled speaker", _remove, _remove_args),
    ]
