"""How the route handlers reach the services: an ApiContext fixed when an app is created, put into each request's
Powertools context by a middleware of that app, and turned into a Caller by the `authenticated` dependency.

Nothing here is a module global, so any number of apps (Lambda, local, one per test) can share the one Router."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.request import Request
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from af2jobs import errors
from af2jobs.api.auth import AUTH_HEADER, MISSING_KEY, authenticate
from af2jobs.api.viewtext import ViewTexts
from af2jobs.models import Principal
from af2jobs.ports import ApiKeyStore, ArtifactStore
from af2jobs.service import JobService

CONTEXT_KEY = "af2jobs"


class ServicesLike(Protocol):
    """The part of wiring.Services the API uses."""

    service: JobService
    store: ArtifactStore
    keys: ApiKeyStore


@dataclass(frozen=True)
class ApiContext:
    service: JobService
    store: ArtifactStore
    keys: ApiKeyStore
    max_request_bytes: int
    max_upload_bytes: int  # PUT /uploads (the local server)
    # Local server: the API itself serves artifact bytes, and links point at its download route. Lambda: responses
    # are capped at 6 MB, so clients are sent to the store's presigned URLs instead.
    serve_files: bool
    # Behind API Gateway, the TOKEN authorizer has already verified the key; its verdict is in the event.
    trust_authorizer: bool
    # A running stage's live log (AWS: its Batch job's CloudWatch stream); None: the stored log is live enough.
    logs: Any = None
    # Signs and checks the key-less links of a job's mail (af2jobs.links); None: GET /jobs/{id}/link refuses all.
    links: Any = None
    # The JSON text of the job views this app has listed (GET /jobs), kept per job version.
    views: ViewTexts = field(default_factory=ViewTexts)

    @classmethod
    def for_local(cls, services: ServicesLike) -> ApiContext:
        return cls._from(services, serve_files=True, trust_authorizer=False)

    @classmethod
    def for_lambda(cls, services: ServicesLike) -> ApiContext:
        return cls._from(services, serve_files=False, trust_authorizer=True)

    @classmethod
    def _from(cls, services: ServicesLike, *, serve_files: bool, trust_authorizer: bool) -> ApiContext:
        return cls(
            service=services.service,
            store=services.store,
            keys=services.keys,
            max_request_bytes=services.service.settings.max_request_bytes,
            max_upload_bytes=services.service.settings.max_upload_bytes,
            serve_files=serve_files,
            trust_authorizer=trust_authorizer,
            logs=getattr(services, "logs", None),
            links=getattr(services, "links", None),
        )


def context_middleware(api: ApiContext):
    """A middleware binding `api` to every request of one app. Per request, because APIGatewayRestResolver
    clears its context after each event."""

    def bind_api_context(app: Any, next_middleware: NextMiddleware) -> Any:
        app.append_context(**{CONTEXT_KEY: api})
        return next_middleware(app)

    return bind_api_context


@dataclass(frozen=True)
class Caller:
    """An authenticated request: who sent it, to which API, at which path (as the client addressed it)."""

    principal: Principal
    api: ApiContext
    path: str
    event: BaseProxyEvent

    @property
    def service(self) -> JobService:
        return self.api.service


def body_size(event: BaseProxyEvent) -> int:
    body = event.body or ""
    if event.is_base64_encoded:
        return len(body) * 3 // 4  # close enough to compare with a limit; not worth decoding to measure
    return len(body.encode("utf-8", errors="surrogatepass"))


UPLOAD_PATH = "/uploads"


def is_upload(method: str, path: str) -> bool:
    """PUT /uploads: a file's bytes, under AF2_MAX_UPLOAD_BYTES rather than AF2_MAX_REQUEST_BYTES."""
    return method.upper() == "PUT" and path.rstrip("/").endswith(UPLOAD_PATH)


def body_limit(api: ApiContext, method: str, path: str) -> tuple[int, str]:
    """The largest body this request may carry, and the setting that says so."""
    if is_upload(method, path):
        return api.max_upload_bytes, "AF2_MAX_UPLOAD_BYTES"
    return api.max_request_bytes, "AF2_MAX_REQUEST_BYTES"


LINK_PATH = re.compile(r"(?:/[^/]+)*/jobs/[^/]+/link/?")  # GET /jobs/{id}/link (a stage name may come first)


def keyless(event: BaseProxyEvent) -> bool:
    """Whether the request is for a route that takes no API key: a signed link from a job's mail."""
    return event.http_method.upper() == "GET" and LINK_PATH.fullmatch(event.path) is not None


def admit(event: BaseProxyEvent, api: ApiContext) -> Principal | None:
    """The checks that come before anything else is looked at: body size (413), then the caller's key (401);
    None for a route that takes no key."""
    size = body_size(event)
    limit, setting = body_limit(api, event.http_method, event.path)
    if size > limit:
        raise errors.PayloadTooLargeError(
            f"request body is {size:,} bytes; the limit is {limit:,} ({setting})", field="body",
        )
    if keyless(event):
        return None
    return authenticate(event, api.keys, trust_authorizer=api.trust_authorizer)


def public_path(event: BaseProxyEvent) -> str:
    """The request path as the client sent it: API Gateway's resource path lacks the stage ('/prod'), its
    requestContext.path has it."""
    return (event.get("requestContext") or {}).get("path") or event.path


def api_context(request: Request) -> ApiContext:
    """Route dependency of the routes that take no API key (a signed link): the API alone."""
    return request.context[CONTEXT_KEY]


def authenticated(request: Request) -> Caller:
    """Route dependency: the admitted caller of this request."""
    api: ApiContext = request.context[CONTEXT_KEY]
    event = request.resolved_event
    principal = admit(event, api)
    if principal is None:  # a route that takes no key never asks for a Caller: this is a route mix-up
        raise errors.AuthError(MISSING_KEY, field=AUTH_HEADER)
    return Caller(principal=principal, api=api, path=public_path(event), event=event)
