"""The two gateway interceptors.

`AuthInterceptor` maps `authorization: Bearer <key>` to a `Principal` (health is open; everything
else, reflection included, needs a key). `ErrorInterceptor` is the one place typed errors become
gRPC statuses, with `google.rpc.Status` details (ErrorInfo, BadRequest, RetryInfo), and where
request counts and latencies are recorded.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.trace import SpanKind
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import logs, metrics, tracing
from shared.auth import KeyRing, Principal
from shared.errors import DOMAIN, JobmeshError, PermissionDenied, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None)

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def current_principal() -> Principal:
    """The caller of the RPC being served (set by AuthInterceptor)."""
    p = _principal.get()
    if p is None:
        raise Unauthenticated("missing API key")
    return p


def caller() -> Principal | None:
    """The caller of the RPC being served, None on an open method (health)."""
    return _principal.get()


def require_admin() -> Principal:
    p = current_principal()
    if not p.is_admin:
        raise PermissionDenied("this call needs an admin key")
    return p


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/") if method.count("/") == 2 else ("", "", method)
    return service.rsplit(".", 1)[-1], name


def rich_status(exc: JobmeshError) -> grpc.Status:
    st = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    st.details.add().Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN,
                                                      metadata=exc.metadata))
    if exc.field_violations:
        st.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in exc.field_violations]))
    if exc.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after_s * 1e9))
        st.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(st)


def _wrap(handler: grpc.RpcMethodHandler, wrap_unary, wrap_stream) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary), handler.request_deserializer,
            handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream), handler.request_deserializer,
            handler.response_serializer)
    return handler  # client-streaming methods: none in our contracts yet


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keyring: KeyRing):
        self.keyring = keyring

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        meta = dict(details.invocation_metadata or ())
        auth = meta.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return self._denied(handler, details.method, Unauthenticated(
                "missing API key: send metadata `authorization: Bearer <key>`"))
        principal = self.keyring.lookup(key.strip())
        if principal is None:
            return self._denied(handler, details.method, Unauthenticated("unknown API key"))

        def unary(fn):
            async def call(request, context):
                _principal.set(principal)
                logs.tenant_var.set(principal.tenant)
                return await fn(request, context)
            return call

        def stream(fn):
            async def call(request, context):
                _principal.set(principal)
                logs.tenant_var.set(principal.tenant)
                async for item in fn(request, context):
                    yield item
            return call

        return _wrap(handler, unary, stream)

    @staticmethod
    def _denied(handler: grpc.RpcMethodHandler, rpc: str,
                exc: JobmeshError) -> grpc.RpcMethodHandler:
        status = rich_status(exc)
        service, method = _split(rpc)

        async def deny(request, context):
            metrics.REQUESTS.labels(service=service, method=method, code="UNAUTHENTICATED").inc()
            await context.abort(status.code, status.details, status.trailing_metadata)

        async def deny_stream(request, context):
            await deny(request, context)
            yield  # pragma: no cover - abort raised above

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                deny_stream, handler.request_deserializer, handler.response_serializer)
        async def deny_stream_stream(request_iterator, context):
            await deny(None, context)
            yield  # pragma: no cover - abort raised above

        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                deny_stream_stream, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            deny, handler.request_deserializer, handler.response_serializer)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Typed errors → status with details; anything unexpected → INTERNAL, logged once."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        service, method = _split(details.method)

        async def fail(context, exc: BaseException) -> None:
            if isinstance(exc, JobmeshError):
                err = exc
            elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
                # The job store is down or restarting: the caller should retry, not give up
                # (found by tests/chaos: this used to surface as INTERNAL).
                log.warning("job store unreachable", extra={"rpc": details.method,
                                                            "error": str(exc)})
                err = Unavailable("the job store (Redis) is unreachable; retry shortly",
                                  reason="BACKEND_UNAVAILABLE", retry_after_s=1.0)
            else:
                log.exception("unhandled error", extra={"rpc": details.method})
                err = JobmeshError("internal error", reason="INTERNAL")
            metrics.REQUESTS.labels(service=service, method=method, code=err.code.name).inc()
            status = rich_status(err)
            await context.abort(status.code, status.details, status.trailing_metadata)

        def done(t0: float, code: str = "OK") -> None:
            metrics.REQUESTS.labels(service=service, method=method, code=code).inc()
            metrics.REQUEST_DURATION.labels(service=service, method=method).observe(
                time.perf_counter() - t0)

        def span(context):
            """A SERVER span per call, continuing the caller's `traceparent` if it sent one."""
            parent = tracing.extract({k: v for k, v in (context.invocation_metadata() or ())
                                      if k in ("traceparent", "tracestate")})
            return tracing.tracer().start_as_current_span(
                details.method, context=parent, kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service,
                            "rpc.method": method})

        def unary(fn):
            async def call(request, context):
                t0 = time.perf_counter()
                with span(context):
                    try:
                        response = await fn(request, context)
                    except grpc.aio.AbortError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - the one place that maps them
                        await fail(context, exc)
                    done(t0)
                    return response
            return call

        def stream(fn):
            async def call(request, context):
                t0 = time.perf_counter()
                with span(context):
                    try:
                        async for item in fn(request, context):
                            yield item
                    except grpc.aio.AbortError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        await fail(context, exc)
                    done(t0)
            return call

        return _wrap(handler, unary, stream)
