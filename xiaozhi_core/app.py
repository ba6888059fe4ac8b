"""Building the providers a deployment selects, behind the executor policy.

Example:
    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor
    >>> from xiaozhi_core.testing import fake_config
    >>> async def main():
    ...     config = fake_config()
    ...     executor = Executor(config.executor)
    ...     providers = await build_providers(config, executor)
    ...     names = sorted(f"{r}:{b.name}" for r, b in providers.items())
    ...     await close_providers(providers)
    ...     executor.shutdown()
    ...     return names
    >>> asyncio.run(main())
    ['asr:fake', 'llm:fake', 'tts:fake', 'vad:fake']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from .config import DeploymentConfig
from .errors import ProviderError, XiaozhiError
from .executor import BoundProvider, Executor, build
from .providers import (
    BoundASR,
    BoundLLM,
    BoundMemory,
    BoundTTS,
    BoundVAD,
    BoundVision,
    BoundVoiceprint,
)
from .types import Role

__all__ = ["Providers", "build_providers", "close_providers"]

log = logging.getLogger(__name__)


#: Any role's bound provider.
AnyBound = BoundVAD | BoundASR | BoundLLM | BoundTTS | BoundVoiceprint | BoundVision | BoundMemory


@dataclass(frozen=True)
class Providers:
    """The bound providers of a deployment, one per role, typed (shared by all sessions)."""

    vad: BoundVAD
    asr: BoundASR
    llm: BoundLLM
    tts: BoundTTS
    voiceprint: BoundVoiceprint | None = None
    #: The camera's image explainer (MCP vision), when a ``vision`` provider is selected.
    vision: BoundVision | None = None
    memory: BoundMemory | None = None

    @classmethod
    def from_roles(cls, bound: dict[Role, BoundProvider]) -> Providers:
        """Type the providers :func:`~xiaozhi_core.executor.build` returned, by role."""
        vp, vision = bound.get(Role.VOICEPRINT), bound.get(Role.VISION)
        mem = bound.get(Role.MEMORY)
        return cls(
            cast(BoundVAD, bound[Role.VAD]),
            cast(BoundASR, bound[Role.ASR]),
            cast(BoundLLM, bound[Role.LLM]),
            cast(BoundTTS, bound[Role.TTS]),
            cast(BoundVoiceprint, vp) if vp is not None else None,
            cast(BoundVision, vision) if vision is not None else None,
            cast(BoundMemory, mem) if mem is not None else None,
        )

    def items(self) -> list[tuple[Role, AnyBound]]:
        """``(role, provider)`` of every selected role, in pipeline order."""
        out: list[tuple[Role, AnyBound]]
        out = [
            (Role.VAD, self.vad),
            (Role.ASR, self.asr),
            (Role.LLM, self.llm),
            (Role.TTS, self.tts),
        ]
        if self.voiceprint is not None:
            out.append((Role.VOICEPRINT, self.voiceprint))
        if self.vision is not None:
            out.append((Role.VISION, self.vision))
        if self.memory is not None:
            out.append((Role.MEMORY, self.memory))
        return out


async def build_providers(config: DeploymentConfig, executor: Executor) -> Providers:
    """Create and bind every selected provider (models load here, once per process)."""
    bound: dict[Role, BoundProvider] = {}
    try:
        for role, choice in config.choices().items():
            try:
                if choice.placement is not None:  # cpu provider on Ray Serve
                    from .ray_serve import deploy

                    bound[role] = await deploy(
                        choice.spec, choice.options, choice.placement, executor
                    )
                else:
                    bound[role] = await build(choice.spec, choice.options, executor)
            except XiaozhiError:
                raise
            except Exception as exc:
                raise ProviderError(
                    f"{role} provider {choice.provider!r} failed to start: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            log.info("provider %s: %s (%s)", role, choice.provider, choice.spec.execution)
    except BaseException:
        await _close(list(bound.items()))
        raise
    return Providers.from_roles(bound)


async def close_providers(providers: Providers) -> None:
    """Close every provider (its ``close()``, if any); a failure is logged, not raised,
    so one bad provider cannot keep the others open at shutdown."""
    await _close(providers.items())


async def _close(items: list[tuple[Role, AnyBound]] | list[tuple[Role, BoundProvider]]) -> None:
    for role, provider in items:
        try:
            await provider.aclose()
            log.debug("provider %s closed", role)
        except Exception as exc:
            log.warning(
                "closing %s provider %r failed: %s: %s",
                role,
                provider.name,
                type(exc).__name__,
                exc,
            )
