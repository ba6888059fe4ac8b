"""Enrolled voices shared through the device store, for any voiceprint provider.

The voiceprint Protocol is unchanged: :class:`SharedVoiceprint` wraps the deployment's
provider and uses only its ``embed``. Enrolling stores the running mean of a speaker's
unit-length embeddings in the store's ``voiceprints`` table (model = the provider's
``embedding_model`` attribute when it declares one, else its name); identifying
compares one embedding with every stored voice of that model by cosine similarity.
Every worker and host reading the same store therefore knows the same speakers. The
voices are cached and re-read from the store at most every ``refresh`` seconds (in the
background: an identification never waits on the database, except for the very first
read), and at once after an enrolment here.

The match threshold is the provider's ``threshold`` option when it has one (the
built-ins do), else 0.8.

Example (the fake provider, a real SQLite store):
    >>> import asyncio, tempfile
    >>> import numpy as np
    >>> from xiaozhi_core.executor import Executor, bind_voiceprint
    >>> from xiaozhi_core.store import Store, StoreSettings
    >>> from xiaozhi_core.testing import FakeVoiceprint, fake_spec, tone
    >>> async def demo():
    ...     store = Store(StoreSettings(data_dir=tempfile.mkdtemp()))
    ...     await store.open()
    ...     executor = Executor()
    ...     inner = bind_voiceprint(fake_spec("voiceprint"), FakeVoiceprint(), executor)
    ...     a, b = SharedVoiceprint(inner, store), SharedVoiceprint(inner, store)
    ...     await a.enroll("ann", tone(1.0, freq=300))
    ...     match = await b.identify(tone(1.0, freq=300))    # another worker's view
    ...     names = await b.speakers()
    ...     await store.close(); executor.shutdown()
    ...     return match.name, names
    >>> asyncio.run(demo())
    ('ann', ['ann'])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from ..providers import BoundVoiceprint, ProviderSpec
from ..types import Execution, SpeakerMatch

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["SharedVoiceprint"]

log = logging.getLogger(__name__)


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


class SharedVoiceprint:
    """A :class:`~xiaozhi_core.providers.BoundVoiceprint` whose enrolled voices live in
    the store (see the module docstring)."""

    def __init__(
        self,
        inner: BoundVoiceprint,
        store: Store,
        *,
        model: str | None = None,
        threshold: float | None = None,
        refresh: float = 10.0,
    ) -> None:
        self.inner = inner
        self.store = store
        #: The provider object (BoundVoiceprint's ``instance``).
        self.instance: object = inner.instance
        options = getattr(inner, "options", None)
        self.model = model or inner.name
        opt = getattr(options, "threshold", None)
        self.threshold = float(
            threshold if threshold is not None else opt if isinstance(opt, int | float) else 0.8
        )
        self.refresh = refresh
        #: name → (running mean of unit embeddings, samples)
        self._voices: dict[str, tuple[np.ndarray, int]] = {}
        self._loaded_at: float | None = None
        self._loading: asyncio.Task[None] | None = None

    # BoundVoiceprint metadata
    @property
    def spec(self) -> ProviderSpec:
        return self.inner.spec

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def execution(self) -> Execution:
        return self.inner.execution

    async def remote_attr(self, name: str) -> object:
        return await self.inner.remote_attr(name)

    async def aclose(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        await self.inner.aclose()

    # the store
    async def resolve_model(self) -> None:
        """Take the provider's ``embedding_model`` (e.g. a weights fingerprint) as the
        model key when it declares one."""
        with contextlib.suppress(Exception):
            declared = await self.inner.remote_attr("embedding_model")
            if isinstance(declared, str) and declared:
                self.model = declared

    async def _load(self) -> None:
        from ..store import StoreError

        try:
            records = await self.store.load_voiceprints(self.model)
        except StoreError as exc:
            log.warning(
                "voiceprints: cannot read the enrolled voices (%s); identifying "
                "with the ones already known",
                exc,
            )
            return
        finally:
            self._loaded_at = time.monotonic()
        voices = {}
        for r in records:
            vector = np.frombuffer(r.embedding, np.float32)
            if vector.size and np.all(np.isfinite(vector)):
                voices[r.name] = (vector.copy(), r.samples)
        self._voices = voices

    async def _current(self) -> dict[str, tuple[np.ndarray, int]]:
        if self._loaded_at is None:
            await self._load()
        elif time.monotonic() - self._loaded_at > self.refresh and (
            self._loading is None or self._loading.done()
        ):
            self._loading = asyncio.get_running_loop().create_task(self._load())
        return self._voices

    # work methods
    async def embed(self, pcm: np.ndarray) -> np.ndarray:
        return await self.inner.embed(pcm)

    async def enroll(self, name: str, pcm: np.ndarray) -> None:
        """Add an utterance to ``name``'s stored voice (raises the store's error: an
        enrolment that was not saved must say so)."""
        name = name.strip()
        if not name:
            raise ValueError("speaker name is empty")
        embedding = _unit(await self.inner.embed(pcm))
        await self._load()
        old = self._voices.get(name)
        if old is None or old[0].shape != embedding.shape:
            mean, count = embedding, 1
        else:
            count = old[1] + 1
            mean = old[0] + (embedding - old[0]) / count
        await self.store.save_voiceprint(name, self.model, mean.astype(np.float32).tobytes(), count)
        self._voices[name] = (mean.astype(np.float32), count)

    async def identify(self, pcm: np.ndarray) -> SpeakerMatch:
        embedding = _unit(await self.inner.embed(pcm))
        voices = await self._current()
        best, score = None, -1.0
        for name, (mean, _) in voices.items():
            if mean.shape != embedding.shape:
                continue
            s = float(np.dot(_unit(mean), embedding))
            if s > score:
                best, score = name, s
        if best is None:
            return SpeakerMatch(None, 0.0)
        score = float(np.clip(score, -1.0, 1.0))
        return SpeakerMatch(best if score >= self.threshold else None, score)

    async def speakers(self) -> list[str]:
        await self._load()
        return sorted(self._voices)

    async def remove(self, name: str) -> int:
        """Forget ``name``; how many stored voices were removed."""
        removed = await self.store.remove_voiceprint(name, self.model)
        self._voices.pop(name, None)
        return removed
