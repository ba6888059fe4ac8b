"""Ray Serve as the third execution backend for ``cpu`` providers (beside thread/process).

Imported only when a deployment sends a provider to Ray (``executor.kind: ray`` or a
role's ``executor: ray``): nothing else in the core imports ``ray``.

* :class:`RayBackend` joins a cluster (``executor.ray.address``: ``auto`` or
  ``ray://HOST:10001``) or starts a local Ray instance, starts Serve without its HTTP
  proxy, and deploys each provider as its own Serve application ``PREFIX-ROLE``.
* :class:`ProviderReplica` is the deployment: each replica builds the provider from its
  spec's factory and validated options, exactly as the local pool does, and checks the
  execution policy there. Work runs in a thread of the replica, so one replica serves
  ``max_ongoing_requests`` calls at once; streams (LLM tokens, TTS chunks) are Serve
  streaming responses, one item per ``next()`` of the provider's generator. Providers
  with the ``batch`` capability and a ``<method>_batch`` method get Serve's request
  batching (``@serve.batch``): concurrent calls from all sessions become one batch call.
* :class:`RayBoundProvider` is what the session sees: the same async work methods as a
  local :class:`~xiaozhi_core.executor.BoundProvider`. Calls go through a deployment
  handle and are awaited on the event loop (the handle's router runs on its own
  thread: the loop never blocks on Ray). Cancelling the awaiting task cancels the Serve
  request; for a stream that stops the generator in the replica after the item it is
  computing and closes it. Any failure on the Ray side (a replica that died, a request
  Serve could not place, an exception in the provider) is raised as a
  :class:`~xiaozhi_core.errors.ProviderError`, which a turn answers with an alert and
  the spoken apology; Serve starts a replacement replica by itself.

Third-party ``cpu`` providers need no change: the replica only calls their factory and
their work methods. Their distribution must be installed on every Ray node (the local
instance shares this virtualenv).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypedDict, cast

from .errors import ProviderError
from .executor import BoundProvider, Executor, RayPlacement, RaySettings, check_policy
from .providers import WORK_METHODS, ProviderSpec

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry: before ray loads

import ray
from ray import serve

__all__ = [
    "ProviderReplica",
    "RayBackend",
    "RayBoundProvider",
    "ReplicaInfo",
    "deploy",
    "ray_backend",
]

log = logging.getLogger(__name__)
_END = ("__xiaozhi_end__",)


class ReplicaInfo(TypedDict):
    """What :meth:`ProviderReplica.describe` reports."""

    present: list[str]
    batch: list[str]
    pid: int
    node_id: str
    calls: int
    batches: list[int]
    streams_open: int
    items_streamed: int
    streams_cancelled: int


def _next(gen: Iterator[object], lock: threading.Lock) -> object:
    with lock:
        try:
            return next(gen)
        except StopIteration:
            return _END


class ProviderReplica:
    """One replica of a provider's Serve deployment (runs in a Ray worker process)."""

    def __init__(
        self,
        spec: ProviderSpec,
        options: object,
        max_batch_size: int = 8,
        batch_wait_ms: float = 10.0,
    ) -> None:
        self.spec = spec
        self.instance = spec.resolve_factory()(options)
        self.present = check_policy(spec, self.instance)
        self.batch_methods = sorted(
            name
            for name in self.present
            if "batch" in spec.capabilities
            and callable(getattr(self.instance, f"{name}_batch", None))
        )
        self.batched.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.batched.set_batch_wait_timeout_s(batch_wait_ms / 1000)  # type: ignore[attr-defined]
        self.calls = 0
        self.batches: list[int] = []
        #: Streams running now, items streamed in total, streams stopped by a cancel.
        self.streams_open = 0
        self.items_streamed = 0
        self.streams_cancelled = 0

    def describe(self) -> ReplicaInfo:
        """Which work methods the provider has, and where this replica runs."""
        ctx = ray.get_runtime_context()
        return {
            "present": self.present,
            "batch": self.batch_methods,
            "pid": os.getpid(),
            "node_id": ctx.get_node_id(),
            "calls": self.calls,
            "batches": self.batches,
            "streams_open": self.streams_open,
            "items_streamed": self.items_streamed,
            "streams_cancelled": self.streams_cancelled,
        }

    async def attr(self, name: str) -> object:
        value = getattr(self.instance, name)
        return value() if callable(value) else value

    async def call(
        self, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        self.calls += 1
        fn = getattr(self.instance, method)
        return await asyncio.to_thread(fn, *args, **kwargs)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def batched(self, requests: list[tuple[str, tuple[object, ...]]]) -> list[object]:
        """Serve gathers concurrent calls of a batch method; one ``<method>_batch`` call."""
        method = requests[0][0]
        self.calls += len(requests)
        self.batches.append(len(requests))
        fn = getattr(self.instance, f"{method}_batch")
        return list(await asyncio.to_thread(fn, [args[0] for _, args in requests]))

    async def call_batched(self, method: str, args: tuple[object, ...]) -> object:
        return await self.batched((method, args))

    async def stream(
        self, method: str, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> AsyncIterator[object]:
        """A Serve streaming response over the provider's blocking generator."""
        self.calls += 1
        gen = await asyncio.to_thread(getattr(self.instance, method), *args, **kwargs)
        lock = threading.Lock()
        self.streams_open += 1
        try:
            while (item := await asyncio.to_thread(_next, gen, lock)) is not _END:
                self.items_streamed += 1
                yield item
        except asyncio.CancelledError:
            self.streams_cancelled += 1
            raise
        finally:
            self.streams_open -= 1
            close = getattr(gen, "close", None)
            if close is not None:

                def closing() -> None:
                    with lock:
                        close()

                await asyncio.shield(asyncio.to_thread(closing))


def _error(spec: ProviderSpec, exc: BaseException) -> ProviderError:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ProviderError):
        return ProviderError(str(cause))
    what = type(cause or exc).__name__
    text = " ".join(str(cause or exc).split())[:300]
    return ProviderError(f"{spec.role} provider {spec.name!r} on Ray Serve failed: {what}: {text}")


class RayBoundProvider(BoundProvider):
    """A provider living in a Ray Serve deployment, behind the usual async work methods."""

    def __init__(
        self,
        spec: ProviderSpec,
        executor: Executor,
        options: object,
        handle: Any,
        info: ReplicaInfo,
        app: str,
    ) -> None:
        # No local instance: BoundProvider.__init__'s checks ran in the replica.
        self.spec = spec
        self.instance = None
        self.executor = executor
        self.options = options
        self.handle = handle
        self.app = app
        self.info = info
        self._remote = True
        self._methods = WORK_METHODS[spec.role]
        self._stream_handle = handle.options(stream=True)
        for name in info["present"]:
            if name == "open_stream":  # a streaming session holds state: it stays local
                continue
            setattr(self, name, self._wrap(name, self._methods[name]))

    async def remote_attr(self, name: str) -> object:
        try:
            return await self.handle.attr.remote(name)
        except Exception as exc:
            raise _error(self.spec, exc) from exc

    async def describe(self) -> ReplicaInfo:
        """A replica's :meth:`ProviderReplica.describe` (whichever Serve picks)."""
        info: ReplicaInfo = await self.handle.describe.remote()
        return info

    def _wrap(self, name: str, kind: str) -> Callable[..., object]:
        spec = self.spec
        batch = name in self.info["batch"]

        if kind == "stream":

            async def ray_stream(*args: object, **kwargs: object) -> AsyncIterator[object]:
                response = self._stream_handle.stream.remote(name, args, kwargs)
                try:
                    async for item in response:
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    raise _error(spec, exc) from exc
                finally:
                    response.cancel()  # a no-op once finished; stops the replica otherwise

            return ray_stream

        async def ray_call(*args: object, **kwargs: object) -> object:
            kwargs.pop("on_partial", None)  # partial results do not cross the cluster
            if batch and not kwargs and len(args) == 1:
                response = self.handle.call_batched.remote(name, args)
            else:
                response = self.handle.call.remote(name, args, kwargs)
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as exc:
                raise _error(spec, exc) from exc

        return ray_call

    async def aclose(self) -> None:
        """Nothing here: the deployment goes with :meth:`RayBackend.shutdown`."""


class RayBackend:
    """Connection to Ray plus the Serve applications this server deployed."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.apps: list[str] = []
        self.started_local = False
        self.start_seconds = 0.0

    def start(self) -> None:
        """Blocking (run in the pool): join or start Ray, start Serve without HTTP."""
        s = self.settings
        t0 = time.monotonic()
        if not ray.is_initialized():
            if s.address:
                extra: dict[str, Any] = {"_node_ip_address": s.node_ip} if s.node_ip else {}
                ray.init(address=s.address, namespace=s.namespace, log_to_driver=False, **extra)
            else:
                ray.init(
                    num_cpus=s.num_cpus,
                    namespace=s.namespace,
                    include_dashboard=False,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",
                )
                self.started_local = True
        serve.start(proxy_location="Disabled")
        self.start_seconds = time.monotonic() - t0
        log.info(
            "Ray %s (%s) and Serve ready in %.1f s",
            ray.__version__,
            s.address or "local instance",
            self.start_seconds,
        )

    def _deploy(
        self, spec: ProviderSpec, options: object, placement: RayPlacement
    ) -> tuple[Any, ReplicaInfo, str]:
        app = f"{self.settings.app_prefix}-{spec.role.value}"
        actor: dict[str, object] = {"num_cpus": placement.num_cpus}
        if placement.resources:
            actor["resources"] = dict(placement.resources)
        opts: dict[str, object] = {
            "name": f"{spec.role.value}-{spec.name}",
            "ray_actor_options": actor,
            "max_ongoing_requests": placement.max_ongoing_requests,
        }
        if placement.autoscaling:
            opts["autoscaling_config"] = dict(placement.autoscaling)
            opts["num_replicas"] = "auto"
        else:
            opts["num_replicas"] = placement.replicas
        running = serve.status().applications.get(app)
        if running is not None and str(running.status).endswith("RUNNING"):
            # Another gateway, or another worker of this one, deployed it: share its
            # replicas (deploying again would roll them under the others' turns).
            log.info("Serve application %s is running: attaching to it", app)
            handle = serve.get_app_handle(app)
        else:
            deployment = serve.deployment(ProviderReplica).options(**opts)  # type: ignore[attr-defined]
            handle = serve.run(
                deployment.bind(spec, options, placement.max_batch_size, placement.batch_wait_ms),
                name=app,
                route_prefix=None,
            )
        self.apps.append(app)
        info: ReplicaInfo = handle.describe.remote().result(timeout_s=60)
        return handle, info, app

    async def deploy(
        self, spec: ProviderSpec, options: object, placement: RayPlacement, executor: Executor
    ) -> RayBoundProvider:
        """Deploy ``spec`` (its factory runs in each replica) and bind it."""
        try:
            handle, info, app = await executor.run(self._deploy, spec, options, placement)
        except ProviderError:
            raise
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            raise ProviderError(
                f"{spec.role} provider {spec.name!r} could not be deployed on "
                f"Ray Serve: {type(cause).__name__}: {cause}"
            ) from exc
        log.info(
            "%s provider %s on Ray Serve (%s, replica pid %s)",
            spec.role,
            spec.name,
            app,
            info.get("pid"),
        )
        return RayBoundProvider(spec, executor, options, handle, info, app)

    def shutdown(self) -> None:
        """Stop the local Ray instance if this process started it (its Serve
        applications go with it). On a cluster the applications stay: other gateways
        and workers use them (remove them with ``serve.delete`` / ``serve shutdown``)."""
        self.apps.clear()
        if self.started_local:
            ray.shutdown()


async def ray_backend(executor: Executor) -> RayBackend:
    """The executor's Ray backend, connected (or started) on first use."""
    if executor.ray is None:
        backend = RayBackend(executor.settings.ray)
        await executor.run(backend.start)
        executor.ray = backend
    return cast(RayBackend, executor.ray)


async def deploy(
    spec: ProviderSpec, options: object, placement: RayPlacement, executor: Executor
) -> RayBoundProvider:
    """Deploy a ``cpu`` provider on Ray Serve (connecting to Ray first if needed)."""
    return await (await ray_backend(executor)).deploy(spec, options, placement, executor)
