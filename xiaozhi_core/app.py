"""Building the providers a deployment selects, behind the executor policy.

Example:
    >>> import asyncio
    >>> from xiaozhi_core.executor import Executor
    >>> from xiaozhi_core.testing import fake_config
    >>> async def main():
    ...     config = fake_config()
    ...     executor = Executor(config.executor)
    ...     bound = await build_providers(config, executor)
    ...     names = sorted(f"{r}:{b.name}" for r, b in bound.items())
    ...     await close_providers(bound)
    ...     executor.shutdown()
    ...     return names
    >>> asyncio.run(main())
    ['asr:fake', 'llm:fake', 'tts:fake', 'vad:fake']
"""

from __future__ import annotations

import logging
from typing import Any

from .config import DeploymentConfig
from .errors import ProviderError, XiaozhiError
from .executor import Executor, build
from .types import Role

__all__ = ["build_providers", "close_providers"]

log = logging.getLogger(__name__)


async def build_providers(config: DeploymentConfig, executor: Executor) -> dict[Role, Any]:
    """Create and bind every selected provider (models load here, once per process)."""
    bound: dict[Role, Any] = {}
    try:
        for role, choice in config.choices().items():
            try:
                bound[role] = await build(choice.spec, choice.options, executor)
            except XiaozhiError:
                raise
            except Exception as exc:
                raise ProviderError(
                    f"{role} provider {choice.provider!r} failed to start: "
                    f"{type(exc).__name__}: {exc}") from exc
            log.info("provider %s: %s (%s)", role, choice.provider, choice.spec.execution)
    except BaseException:
        await close_providers(bound)
        raise
    return bound


async def close_providers(bound: dict[Role, Any]) -> None:
    """Close every provider (its ``close()``, if any); a failure is logged, not raised,
    so one bad provider cannot keep the others open at shutdown."""
    for role, provider in bound.items():
        try:
            await provider.aclose()
            log.debug("provider %s closed", role)
        except Exception as exc:
            log.warning("closing %s provider %r failed: %s: %s", role,
                        getattr(provider, "name", "?"), type(exc).__name__, exc)
