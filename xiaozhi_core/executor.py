"""The executor policy: ``io`` providers run on the event loop, ``cpu`` providers in pools.

The core never calls a provider's work method directly. It *binds* each provider once
(:func:`bind`), which

1. checks that the provider's work methods have the flavour its spec declares
   (coroutines for ``io``, plain functions for ``cpu``) and refuses it otherwise;
2. returns a :class:`BoundProvider` whose work methods are always ``async``: ``io`` ones
   are awaited on the loop, ``cpu`` ones run in the shared, bounded :class:`Executor`
   pool, and ``cpu`` streams (sync generators) are pumped item by item into a bounded
   queue on the loop, so a slow consumer never holds a pool thread.

Blocking code in a worker that needs the loop uses :meth:`Executor.run_on_loop`
(``run_coroutine_threadsafe`` underneath); called from the loop thread it raises
instead of dead-locking.

Example:
    >>> import asyncio
    >>> import numpy as np
    >>> from xiaozhi_core.testing import FakeASR, fake_spec
    >>> async def main():
    ...     executor = Executor(ExecutorSettings(cpu_workers=2))
    ...     asr = bind(fake_spec("asr"), FakeASR(text="ok"), executor)
    ...     result = await asr.transcribe(np.zeros(160, np.int16))
    ...     executor.shutdown()
    ...     return result.text
    >>> asyncio.run(main())
    'ok'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar, cast

from .errors import ExecutionPolicyError
from .looplag import traced, traced_stream
from .providers import (
    ASR_STREAM_METHODS,
    REQUIRED_METHODS,
    WORK_METHODS,
    BoundASR,
    BoundLLM,
    BoundMemory,
    BoundTTS,
    BoundVAD,
    BoundVision,
    BoundVoiceprint,
    ProviderSpec,
)
from .types import Execution, Role

__all__ = [
    "BoundProvider",
    "Executor",
    "ExecutorSettings",
    "RayPlacement",
    "RaySettings",
    "bind",
    "bind_asr",
    "bind_llm",
    "bind_memory",
    "bind_tts",
    "bind_vad",
    "bind_vision",
    "bind_voiceprint",
    "build",
    "check_policy",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")


class _End:
    """The end-of-stream marker of a cpu stream's queue."""


_END = _End()


@dataclass
class RaySettings:
    """``executor.ray:`` the Ray cluster that runs providers sent to Ray Serve.

    ``address`` empty: this process starts a local Ray instance with ``num_cpus``
    (stopped with the server); ``auto`` joins the cluster of this machine's
    ``ray start``; ``ray://HOST:10001`` joins a remote cluster through Ray Client.
    """

    address: str = ""
    num_cpus: int = 2
    #: This process's address in the cluster (Ray's ``_node_ip_address``): empty =
    #: Ray's choice when joining; a local instance always uses 127.0.0.1.
    node_ip: str = ""
    namespace: str = "xiaozhi"
    #: Serve applications are named PREFIX-ROLE (one per role, deployed independently).
    app_prefix: str = "xiaozhi"


@dataclass
class RayPlacement:
    """``<role>.ray:`` how a provider runs as a Ray Serve deployment.

    ``num_cpus`` and ``resources`` are Ray's scheduling reservations per replica
    (``resources: {asr_node: 1}`` pins the replicas to nodes started with that custom
    resource). ``autoscaling`` is passed to Serve as ``autoscaling_config``
    (``min_replicas``, ``max_replicas``, ``target_ongoing_requests``...) and then
    replaces ``replicas``. ``max_batch_size`` / ``batch_wait_ms`` configure Serve's
    request batching for providers that declare the ``batch`` capability.
    """

    replicas: int = 1
    num_cpus: float = 0.5
    resources: dict[str, float] = field(default_factory=dict)
    max_ongoing_requests: int = 8
    autoscaling: dict[str, Any] | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0


@dataclass
class ExecutorSettings:
    """``executor:`` section of a deployment config.

    ``kind``: ``thread`` or ``process`` pool for ``cpu`` providers, or ``ray``: every
    ``cpu`` provider except the VAD runs as a Ray Serve deployment (a role's
    ``executor: local|ray`` overrides this; the VAD, decoding and encoding always stay
    in the local thread pool). ``cpu_workers`` 0 means one worker per core.
    ``max_pending`` bounds the jobs waiting for a worker (beyond it, callers wait:
    back-pressure instead of an unbounded queue). ``stream_buffer`` is how many items a
    ``cpu`` stream may produce ahead of its consumer.
    """

    kind: Literal["thread", "process", "ray"] = "thread"
    cpu_workers: int = 0
    max_pending: int = 256
    stream_buffer: int = 8
    ray: RaySettings = field(default_factory=RaySettings)

    def __post_init__(self) -> None:
        if self.cpu_workers < 0:
            raise ValueError("cpu_workers must be >= 0 (0 = one per core)")
        if self.max_pending < 1 or self.stream_buffer < 1:
            raise ValueError("max_pending and stream_buffer must be >= 1")

    @property
    def workers(self) -> int:
        return self.cpu_workers or os.cpu_count() or 1


# ---------------------------------------------------------------- process-pool side
_WORKER_INSTANCES: dict[tuple[str, str], object] = {}


def _worker_instance(spec: ProviderSpec, options: object) -> object:
    key = (spec.role.value, spec.name)
    inst = _WORKER_INSTANCES.get(key)
    if inst is None:
        inst = spec.resolve_factory()(options)
        _WORKER_INSTANCES[key] = inst
    return inst


def _worker_call(
    spec: ProviderSpec,
    options: object,
    method: str,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    collect: bool,
) -> object:
    result = getattr(_worker_instance(spec, options), method)(*args, **kwargs)
    return list(result) if collect else result


def _check_in_worker(spec: ProviderSpec) -> None:
    factory = spec.resolve_factory()
    if isinstance(factory, type):  # a plain factory function can only be checked per instance
        check_policy(spec, factory)


def _worker_attr(spec: ProviderSpec, options: object, name: str) -> object:
    value = getattr(_worker_instance(spec, options), name)
    return value() if callable(value) else value


class Executor:
    """The shared worker pool plus the bridges between it and the event loop.

    Created on (or bound lazily to) the running loop. One per process; nothing here
    creates a thread per connection.
    """

    def __init__(self, settings: ExecutorSettings | None = None) -> None:
        self.settings = settings or ExecutorSettings()
        self._pool: concurrent.futures.Executor
        if self.settings.kind == "process":
            import multiprocessing

            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.settings.workers,
                mp_context=multiprocessing.get_context("spawn"),
            )
        else:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.settings.workers, thread_name_prefix="xiaozhi-cpu"
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._slots: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        #: Jobs not finished yet: waiting for a slot, queued in the pool, or running.
        self.pending = 0
        #: Jobs handed to the pool (queued or running); never more than ``max_pending``.
        self.in_pool = 0
        #: Jobs running in a worker thread right now (thread pools only).
        self.running = 0
        self.completed = 0
        self.busy_seconds = 0.0
        #: The Ray Serve backend (:mod:`xiaozhi_core.ray_serve`) once a provider is
        #: deployed there; stopped with the pool. Nothing imports ray before.
        self.ray: Any = None

    @property
    def is_process_pool(self) -> bool:
        return self.settings.kind == "process"

    # -- loop binding -------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            self._slots = asyncio.Semaphore(self.settings.max_pending)
        return loop

    def on_loop_thread(self) -> bool:
        return self._loop_thread is not None and threading.get_ident() == self._loop_thread

    # -- running blocking work ------------------------------------------------------
    def _timed(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            self.running += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self.busy_seconds += time.perf_counter() - t0
                self.running -= 1

    def _job_done(self, slots: asyncio.Semaphore) -> None:
        # On the loop thread, once the pool has really finished (or dropped) the job.
        self.in_pool -= 1
        self.pending -= 1
        self.completed += 1
        slots.release()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn`` in the pool and await its result (never on the loop).

        At most ``max_pending`` jobs are in the pool (queued or running); further
        callers wait here. A job keeps its slot until it has really finished, even if
        its caller was cancelled meanwhile (a running thread cannot be interrupted);
        a job cancelled before a worker picked it up is dropped.
        """
        loop = self._bind_loop()
        slots = self._slots
        assert slots is not None
        self.pending += 1
        try:
            await slots.acquire()
        except BaseException:
            self.pending -= 1
            raise
        try:
            job: concurrent.futures.Future[T]
            if self.is_process_pool:
                job = self._pool.submit(fn, *args, **kwargs)
            else:
                job = self._pool.submit(functools.partial(self._timed, fn, *args, **kwargs))
        except BaseException:
            self.pending -= 1
            slots.release()
            raise
        self.in_pool += 1
        try:
            # wrap_future cancels the pool job if this await is cancelled before it starts.
            return await asyncio.wrap_future(job, loop=loop)
        finally:
            if job.done():
                self._job_done(slots)
            else:  # cancelled while running: the slot stays taken until the thread is done

                def done(_: concurrent.futures.Future[T]) -> None:
                    try:
                        loop.call_soon_threadsafe(self._job_done, slots)
                    except RuntimeError:  # the loop is closed: nobody waits for slots
                        pass

                job.add_done_callback(done)

    async def stream(
        self, gen_fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[T]:
        """Iterate a blocking generator from the loop.

        Each ``next()`` runs in the pool; at most ``stream_buffer`` items are produced
        ahead of the consumer. Leaving the ``async for`` early (or cancelling the
        consumer) stops the producer after the item it is computing and closes the
        generator in the pool.
        """
        self._bind_loop()
        queue: asyncio.Queue[T | _End | _Raise] = asyncio.Queue(self.settings.stream_buffer)
        gen: Iterator[T] = await self.run(gen_fn, *args, **kwargs)
        stop = threading.Event()
        # next() and close() must not overlap: closing a generator while another
        # thread runs it fails ("generator already executing") and skips its cleanup.
        lock = threading.Lock()

        def step() -> T | _End:
            with lock:
                if stop.is_set():
                    return _END
                try:
                    return next(gen)
                except StopIteration:
                    return _END

        def close_gen() -> None:
            stop.set()
            with lock:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()

        async def pump() -> None:
            try:
                while True:
                    item = await self.run(step)
                    await queue.put(item)
                    if item is _END:
                        return
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # forwarded to the consumer
                await queue.put(_Raise(exc))

        task = asyncio.get_running_loop().create_task(pump(), name=f"cpu-stream:{gen_fn!r}")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Raise):
                    raise item.exc
                yield item
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            # Shielded: a second cancellation of the consumer must not skip the cleanup.
            closing = asyncio.ensure_future(self.run(close_gen))
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                closing.add_done_callback(_log_close_error)
                raise
            except Exception as exc:
                log.warning("closing cpu stream %r failed: %s", gen_fn, exc)

    # -- the other direction: worker → loop -------------------------------------------
    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread (never blocks)."""
        if self._loop is None:
            raise ExecutionPolicyError("executor is not bound to an event loop yet")
        if self.on_loop_thread():
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def run_on_loop(self, coro: Coroutine[object, None, T], timeout: float | None = None) -> T:
        """Blocking: run ``coro`` on the loop and wait for its result, from a worker thread.

        Raises :class:`ExecutionPolicyError` on the loop thread, where waiting would
        dead-lock the loop.
        """
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise ExecutionPolicyError("executor is not bound to a running event loop")
        if self.on_loop_thread():
            coro.close()
            raise ExecutionPolicyError(
                "run_on_loop() was called on the event-loop thread; it would dead-lock. "
                "Use 'await' there instead."
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stats(self) -> dict[str, float]:
        """Counters for the metrics endpoint."""
        return {
            "workers": self.settings.workers,
            "pending": self.pending,
            "in_pool": self.in_pool,
            "running": self.running,
            "completed": self.completed,
            "busy_seconds": round(self.busy_seconds, 6),
        }

    def shutdown(self, wait: bool = True) -> None:
        if self.ray is not None:
            ray, self.ray = self.ray, None
            ray.shutdown()
        self._pool.shutdown(wait=wait, cancel_futures=True)


@dataclass
class _Raise:
    exc: BaseException


def _log_close_error(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("closing a cpu stream failed: %s", fut.exception())


# ---------------------------------------------------------------- policy checks
_Flavour = Literal["async", "asyncgen", "gen", "sync"]

_FLAVOUR_TEXT: dict[_Flavour, str] = {
    "async": "a coroutine function (async def)",
    "asyncgen": "an async generator (async def + yield)",
    "gen": "a plain generator (def + yield, blocking)",
    "sync": "a plain blocking function",
}


def _flavour(fn: Callable[..., object]) -> _Flavour:
    target = inspect.unwrap(fn)
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.iscoroutinefunction(target):
        return "async"
    if inspect.isgeneratorfunction(target):
        return "gen"
    return "sync"


def check_policy(
    spec: ProviderSpec,
    instance: object,
    methods: dict[str, Literal["call", "stream"]] | None = None,
    required: tuple[str, ...] | None = None,
    what: str | None = None,
) -> list[str]:
    """Raise :class:`ExecutionPolicyError` if ``instance`` breaks its declared policy.

    Returns the work methods it implements.

    >>> from xiaozhi_core.testing import fake_spec
    >>> class AsyncOnCpu:
    ...     async def transcribe(self, pcm, *, language=None): ...
    >>> check_policy(fake_spec("asr"), AsyncOnCpu())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xiaozhi_core.errors.ExecutionPolicyError: asr provider 'fake': transcribe() is a ...
    """
    methods = WORK_METHODS[spec.role] if methods is None else methods
    required = REQUIRED_METHODS[spec.role] if required is None else required
    label = what or f"{spec.role} provider {spec.name!r}"
    for name in required:
        if not callable(getattr(instance, name, None)):
            raise ExecutionPolicyError(f"{label}: missing required method {name}()")
    present = []
    for name, kind in methods.items():
        fn = getattr(instance, name, None)
        if fn is None:
            continue
        if not callable(fn):
            raise ExecutionPolicyError(f"{label}: {name} must be a method, got {fn!r}")
        present.append(name)
        flavour = _flavour(fn)
        if spec.execution is Execution.CPU and flavour in ("async", "asyncgen"):
            want = (
                "a plain generator (def + yield)"
                if kind == "stream"
                else ("a plain blocking function")
            )
            raise ExecutionPolicyError(
                f"{label}: {name}() is {_FLAVOUR_TEXT[flavour]}, but the provider is declared "
                f"'cpu'; cpu work methods must be {want} (the core runs them in the worker "
                "pool). Declare the provider 'io' if it only awaits I/O."
            )
        if spec.execution is Execution.IO:
            want_flavour: _Flavour = "asyncgen" if kind == "stream" else "async"
            if flavour != want_flavour:
                hint = (
                    " Declare the provider 'cpu' if it blocks."
                    if flavour in ("sync", "gen")
                    else ""
                )
                raise ExecutionPolicyError(
                    f"{label}: {name}() is {_FLAVOUR_TEXT[flavour]}, but the provider is "
                    f"declared 'io'; io {'streams' if kind == 'stream' else 'calls'} must be "
                    f"{_FLAVOUR_TEXT[want_flavour]}.{hint}"
                )
    if (
        Role.ASR is spec.role
        and "streaming" in spec.capabilities
        and methods is WORK_METHODS[Role.ASR]
        and "open_stream" not in present
    ):
        raise ExecutionPolicyError(
            f"{label}: declares the 'streaming' capability but has no open_stream() method"
        )
    return present


class BoundProvider:
    """A provider behind the executor policy. Work methods are ``async`` here whatever
    the provider's flavour; other attributes pass through unchanged.

    For ``io`` providers each call asserts it runs on the loop thread; for ``cpu`` ones
    the call is submitted to the pool.
    """

    def __init__(
        self,
        spec: ProviderSpec,
        instance: object,
        executor: Executor,
        options: object = None,
        *,
        methods: dict[str, Literal["call", "stream"]] | None = None,
        required: tuple[str, ...] | None = None,
        what: str | None = None,
    ) -> None:
        self.spec = spec
        self.instance = instance
        self.executor = executor
        self.options = options
        self._remote = executor.is_process_pool and spec.execution is Execution.CPU
        self._methods = WORK_METHODS[spec.role] if methods is None else methods
        if not self._remote:
            check_policy(spec, instance, self._methods, required, what)
        for name, kind in self._methods.items():
            if self._remote or getattr(instance, name, None) is not None:
                setattr(self, name, self._wrap(name, kind))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def execution(self) -> Execution:
        return self.spec.execution

    def __getattr__(self, item: str) -> Any:
        # Only reached for attributes not set in __init__: metadata of the provider.
        if item.startswith("__") or item in ("instance", "spec", "executor", "_remote"):
            raise AttributeError(item)
        if self._remote:
            raise AttributeError(f"{item} (use await bound.remote_attr({item!r}) in process mode)")
        return getattr(self.instance, item)

    async def remote_attr(self, name: str) -> object:
        """Read a metadata attribute (or call a cheap method) of a provider in the pool."""
        if not self._remote:
            value = getattr(self.instance, name)
            return value() if callable(value) else value
        return await self.executor.run(_worker_attr, self.spec, self.options, name)

    def _check_loop(self, name: str) -> None:
        if self.executor._loop_thread is not None and not self.executor.on_loop_thread():
            raise ExecutionPolicyError(
                f"{self.spec.role} provider {self.spec.name!r}: io method {name}() called off "
                "the event-loop thread"
            )

    def _wrap(self, name: str, kind: str) -> Callable[..., object]:
        spec, executor = self.spec, self.executor
        if spec.execution is Execution.IO:
            fn = getattr(self.instance, name)
            # a blocking call inside the provider's async code is reported as this
            # provider's, not as the session task's that awaited it (looplag)
            label = f"{spec.role} provider {spec.name!r} {name}()"
            if kind == "stream":

                def io_stream(*args: object, **kwargs: object) -> AsyncIterator[object]:
                    self._check_loop(name)
                    stream: AsyncIterator[object] = fn(*args, **kwargs)
                    return traced_stream(stream, label)

                return io_stream

            async def io_call(*args: object, **kwargs: object) -> object:
                executor._bind_loop()
                self._check_loop(name)
                result = await traced(fn(*args, **kwargs), label)
                return self._post(name, result)

            return io_call

        if self._remote:
            collect = kind == "stream"

            async def remote_call(*args: object, **kwargs: object) -> object:
                if name == "open_stream":
                    raise ExecutionPolicyError(
                        f"{spec.role} provider {spec.name!r}: streaming sessions are not "
                        "supported with executor.kind 'process'; use 'thread'"
                    )
                return await executor.run(
                    _worker_call, spec, self.options, name, args, kwargs, collect
                )

            if kind == "stream":

                async def remote_stream(*args: object, **kwargs: object) -> AsyncIterator[object]:
                    items = await remote_call(*args, **kwargs)
                    assert isinstance(items, list)  # _worker_call collected the stream
                    for item in items:
                        yield item

                return remote_stream
            return remote_call

        fn = getattr(self.instance, name)
        if kind == "stream":

            def cpu_stream(*args: object, **kwargs: object) -> AsyncIterator[object]:
                return executor.stream(fn, *args, **kwargs)

            return cpu_stream

        async def cpu_call(*args: object, **kwargs: object) -> object:
            callback = kwargs.get("on_partial")
            if callable(callback):
                kwargs["on_partial"] = lambda result: executor.call_soon(callback, result)
            result = await executor.run(fn, *args, **kwargs)
            return self._post(name, result)

        return cpu_call

    def _post(self, name: str, result: object) -> object:
        if name == "open_stream":
            return BoundProvider(
                self.spec,
                result,
                self.executor,
                self.options,
                methods=ASR_STREAM_METHODS,
                required=("push", "finish"),
                what=f"{self.spec.role} provider {self.spec.name!r} stream",
            )
        return result

    async def aclose(self) -> None:
        """Release the provider (calls its ``close()`` if it has one)."""
        close = getattr(self.instance, "close", None)
        if close is None or self._remote:
            return
        if _flavour(close) == "async":
            await close()
        elif self.spec.execution is Execution.CPU:
            await self.executor.run(close)
        else:
            close()


def bind(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundProvider:
    """Put ``instance`` (built from ``spec``) behind the executor policy.

    Raises :class:`ExecutionPolicyError` when its methods do not match ``spec.execution``.
    The per-role helpers below return the same object typed as the role's protocol.
    """
    return BoundProvider(spec, instance, executor, options)


def bind_vad(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundVAD:
    """:func:`bind` for a VAD provider, typed :class:`~xiaozhi_core.providers.BoundVAD`."""
    return cast(BoundVAD, bind(spec, instance, executor, options))


def bind_asr(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundASR:
    """:func:`bind` for an ASR provider, typed :class:`~xiaozhi_core.providers.BoundASR`."""
    return cast(BoundASR, bind(spec, instance, executor, options))


def bind_llm(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundLLM:
    """:func:`bind` for an LLM provider, typed :class:`~xiaozhi_core.providers.BoundLLM`."""
    return cast(BoundLLM, bind(spec, instance, executor, options))


def bind_tts(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundTTS:
    """:func:`bind` for a TTS provider, typed :class:`~xiaozhi_core.providers.BoundTTS`."""
    return cast(BoundTTS, bind(spec, instance, executor, options))


def bind_voiceprint(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundVoiceprint:
    """:func:`bind` for a voiceprint provider, typed
    :class:`~xiaozhi_core.providers.BoundVoiceprint`."""
    return cast(BoundVoiceprint, bind(spec, instance, executor, options))


def bind_memory(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundMemory:
    """:func:`bind` for a memory provider, typed :class:`~xiaozhi_core.providers.BoundMemory`."""
    return cast(BoundMemory, bind(spec, instance, executor, options))


async def build(spec: ProviderSpec, options: object, executor: Executor) -> BoundProvider:
    """Create a provider from validated ``options`` and bind it.

    ``cpu`` factories (which load models) run in the pool so the loop stays responsive;
    in process mode the instance is created lazily inside each worker instead.
    (A provider placed on Ray is built by :func:`xiaozhi_core.ray_serve.deploy`.)
    """
    if spec.execution is Execution.CPU and executor.is_process_pool:
        # Instances live in the worker processes (created on first use there). Check the
        # factory class's methods in a worker, so a policy mismatch is still refused at
        # load time without importing the provider's module into this process.
        await executor.run(_check_in_worker, spec)
        return BoundProvider(spec, None, executor, options)
    factory = (
        await executor.run(spec.resolve_factory)
        if spec.execution is Execution.CPU
        else spec.resolve_factory()
    )
    if spec.execution is Execution.CPU:
        instance = await executor.run(factory, options)
    else:
        instance = factory(options)
        if inspect.isawaitable(instance):
            instance = await instance
    return bind(spec, instance, executor, options)


def bind_vision(
    spec: ProviderSpec, instance: object, executor: Executor, options: object = None
) -> BoundVision:
    """:func:`bind` for a vision provider, typed :class:`~xiaozhi_core.providers.BoundVision`."""
    return cast(BoundVision, bind(spec, instance, executor, options))
