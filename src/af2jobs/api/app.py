"""The two ways to serve the Router: `create_asgi_app` for the local server (uvicorn) and `create_lambda_resolver`
for API Gateway + Lambda. Both get the same routes, error handling, OpenAPI document (/openapi.json) and Swagger UI
(/swagger); they differ only in the ApiContext (context.py) they bind.

Locally, LocalApi reads each request on uvicorn's event loop and resolves it, middleware chain and handler, in one
thread of its own pool: several requests are served at once (the handlers are the same synchronous code the Lambda
runs, and SQLite releases the GIL while it waits on the file)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, HttpResolverLocal, content_types, depends
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver, Response
from aws_lambda_powertools.event_handler.http_resolver import HttpProxyEvent, MockLambdaContext, _RequestState
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
    OpenAPIResponseValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import APIKey

from af2jobs import __version__, errors
from af2jobs.api import original
from af2jobs.api.auth import AUTH_HEADER, verify_key
from af2jobs.api.context import ApiContext, ServicesLike, body_limit, context_middleware, is_upload
from af2jobs.api.routes import BadRequestError, error_response, router, validation_error_response
from af2jobs.api.viewtext import JsonText

OPENAPI_PATH = "/openapi.json"
# The methods of the routes that need no key (a signed link, the OpenAPI document, Swagger UI) and carry no body;
# every other request's key is checked before its body is read.
KEYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Requests resolved at once by the local server. More threads than cores: a request waiting on SQLite (a write lock,
# the disk) holds a thread but not the GIL.
RESOLVER_THREADS = 8
SWAGGER_PATH = "/swagger"
_DESCRIPTION = (
    "AlphaFold2 prediction jobs. Send your API key in the Authorization header (the bare key, or "
    "'Bearer <key>'). The original platform's routes (GET, POST, DELETE and CANCEL on / and /{id}) are answered as "
    "it answered them; this document describes af2jobs' own, where CANCEL is POST /jobs/{job_id}/cancel and POST "
    "/jobs/cancel."
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_asgi_app(services: ServicesLike) -> LocalApi:
    """The local server's ASGI app (run it with uvicorn)."""
    api = ApiContext.for_local(services)
    app = LocalApi(api=api, enable_validation=True, debug=False)
    _assemble(app, api)
    app.build_middleware_stacks()
    return app


def create_lambda_resolver(services: ServicesLike) -> APIGatewayRestResolver:
    """The Lambda function's resolver, for API Gateway REST proxy events behind the TOKEN authorizer."""
    api = ApiContext.for_lambda(services)
    # debug=False whatever POWERTOOLS_DEV says: debug mode prints whole events, Authorization header included.
    app = APIGatewayRestResolver(enable_validation=True, debug=False)
    _assemble(app, api)
    return app


def _build_dependency_trees_once() -> None:
    """Powertools builds a route's dependency tree (which parameters are Depends()) anew on every request, from
    typing.get_type_hints, which evaluates each string annotation again: a fifth of a GET /jobs/{id}. Then, for each
    dependency, it reads the dependency's type hints again, to pass a Request to whichever parameter asks for one.
    A function's annotations do not change, so each tree and each dependency's hints are read once.
    tests/functional/test_api_concurrency.py fails if an upgrade renames what this wraps."""
    if not hasattr(depends.build_dependency_tree, "cache_info"):
        depends.build_dependency_tree = functools.lru_cache(maxsize=None)(depends.build_dependency_tree)
    if not hasattr(depends.get_type_hints, "cache_info"):
        depends.get_type_hints = functools.lru_cache(maxsize=None)(depends.get_type_hints)


def _assemble(app: ApiGatewayResolver, api: ApiContext) -> None:
    _build_dependency_trees_once()
    # Replaces the resolver's own request and response validation (created when enable_validation=True), before any
    # route runs. Private attributes of Powertools: tests/reliability/test_bad_input.py and
    # tests/functional/test_api_routes.py fail if an upgrade stops using them.
    app._request_validation_middleware = JsonBodyValidation()
    app._response_validation_middleware = PreparedJsonResponses(
        validation_serializer=app._response_validation_middleware._validation_serializer,
        has_response_validation_error=app._response_validation_middleware._has_response_validation_error,
    )
    app.use([context_middleware(api)])
    app.include_router(router)
    app.include_router(original.router)
    # Needs this app's current event, so it is registered here rather than on the shared Router.
    @app.exception_handler(RequestValidationError)
    def handle_request_validation(exc: RequestValidationError) -> Response:
        return validation_error_response(exc, app.current_event, api)

    app.configure_openapi(
        title="af2jobs",
        version=__version__,
        description=_DESCRIPTION,
        security_schemes={"apiKey": APIKey.model_validate({"type": "apiKey", "in": "header", "name": AUTH_HEADER})},
        security=[{"apiKey": []}],
    )
    app.enable_swagger(path=SWAGGER_PATH)  # the UI is bundled with Powertools: no CDN needed

    @app.get(OPENAPI_PATH, include_in_schema=False)
    def openapi_document():  # no return annotation: it would be read as a response model
        document = app.get_openapi_json_schema()
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=document)


class LocalApi(HttpResolverLocal):
    """HttpResolverLocal that resolves each request synchronously in a thread of its own pool, and refuses bodies
    over the limit while reading them, so a huge upload cannot fill the server's memory (HttpResolverLocal buffers
    whatever arrives). API Gateway caps bodies before Lambda does.

    HttpResolverLocal's own path runs each synchronous middleware in a thread of the loop's default executor, and
    that thread blocks until the next middleware, which needs another thread: a few concurrent requests took every
    thread and the server stopped answering. Here the whole chain runs in the one thread, as in a Lambda, and the
    request's state (current_event, context) lives in that thread's ContextVar, as HttpResolverLocal keeps it."""

    def __init__(self, *, api: ApiContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api
        self._pool = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="af2-api")

    def build_middleware_stacks(self) -> None:
        """Build every route's middleware chain now, once all routes and middlewares are registered: Powertools
        builds it on a route's first request, and two threads building it at once would chain it twice."""
        for route in self._static_routes + self._dynamic_routes:
            if not route._middleware_stack_built:
                route._build_middleware_stack(router_middlewares=self._router_middlewares, app=self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        limit, setting = body_limit(self.api, method, path)
        too_large = errors.PayloadTooLargeError(f"request body is larger than {limit:,} bytes ({setting})",
                                                field="body")
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_error(send, too_large)
            return
        if method.upper() not in KEYLESS_METHODS and not self.api.trust_authorizer:
            # A request that may carry a body has its key checked before a byte of the body is read: an anonymous
            # 250 MB upload is answered 401 at its headers, not once it sits in the server's memory.
            try:  # in the pool: a key's check reads the store and may hash (scrypt), which the loop must not wait on
                await asyncio.get_running_loop().run_in_executor(self._pool, verify_key, self.api.keys,
                                                                 _header(scope, AUTH_HEADER))
            except errors.AuthError as exc:
                await _send_error(send, exc)
                return
        body = await self._read_body(scope, receive, limit)
        if body is None:
            await _send_error(send, too_large)
            return
        try:
            body.decode("utf-8")  # HttpResolverLocal decodes the body before any route or handler could refuse it
        except UnicodeDecodeError as exc:
            what = "the file is not text" if is_upload(scope.get("method", ""), scope.get("path", "")) else \
                "the body is not valid JSON"
            await _send_error(send, BadRequestError(f"{what}: {_not_utf8(exc)}", field="body"))
            return
        # A fresh copy of the context per request: the state set in it never outlives the request.
        run = contextvars.copy_context().run
        response = await asyncio.get_running_loop().run_in_executor(self._pool, run, self._resolve_in_thread,
                                                                    scope, body)
        await self._send_response(send, response)

    def _resolve_in_thread(self, scope: Scope, body: bytes) -> dict[str, Any]:
        """HttpResolverLocal.asgi_handler's resolution, with the synchronous chain (the one Lambda runs)."""
        self._request_state.set(_RequestState(
            event=HttpProxyEvent.from_asgi(scope, body),
            lambda_context=MockLambdaContext(),
            context=self._startup_state.context.copy(),
        ))
        return self._resolve().build(self.current_event, self._cors)

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class JsonBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation for an API whose bodies are JSON only. A body is read as JSON whatever its
    Content-Type says (`curl -d` sends JSON as application/x-www-form-urlencoded); one that is not JSON under
    another type (a form, a multipart upload) is 415: Powertools would parse it, and a multipart type without a
    boundary raises ValueError, a 500. A body that json.loads cannot take without raising something other than
    JSONDecodeError (not UTF-8, nested too deeply, an integer of more than sys.get_int_max_str_digits() digits)
    is 400 like any other unreadable JSON. An array is a batch of jobs (POST /jobs)."""

    def _get_body(self, app: Any) -> Any:
        content_type = app.current_event.headers.get("content-type", "").strip()
        if content_type and not content_type.startswith(content_types.APPLICATION_JSON) \
                and not _reads_as_json(app.current_event):
            raise RequestUnsupportedContentType(
                "Unsupported content type",
                errors=[{"type": "unsupported_content_type", "loc": ("body",), "msg": content_type, "input": {}}],
            )
        try:
            body = self._parse_json_data(app)
        except UnicodeDecodeError as exc:
            problem = _not_utf8(exc)
        except RecursionError:
            problem = "arrays or objects are nested too deeply"
        except ValueError as exc:  # JSONDecodeError is handled by Powertools; this is e.g. a 5000-digit integer
            problem = str(exc).split(";")[0]
        else:
            return body
        ctx = {"error": problem}
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "", "ctx": ctx}])


class PreparedJsonResponses(OpenAPIResponseValidationMiddleware):
    """Powertools' response validation and serialisation, except for a body that is already what goes on the wire:
    a file's bytes (GET /jobs/{id}/file and /link: Powertools would validate them as a str, decoding them as UTF-8,
    which a PNG or a pickle is not), or the JSON text a route has made of its response model (a viewtext.JsonText,
    GET /jobs's page; validating it would mean parsing it back). The resolver encodes neither again."""

    def _handle_response(self, *, route: Any, response: Response) -> Response:
        if isinstance(response.body, (bytes, JsonText)):
            return response
        return super()._handle_response(route=route, response=response)


def _reads_as_json(event: Any) -> bool:
    """Whether the body is a JSON object or array (for a body sent under another Content-Type)."""
    try:
        return isinstance(json.loads(event.decoded_body or ""), (dict, list))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, too long a number
        return False


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte offset {exc.start})"


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, "content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _send_error(send: Send, exc: errors.Af2JobsError) -> None:
    response = error_response(exc)
    payload = json.dumps(response.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    extra = {k.lower(): v for k, v in response.headers.items() if k.lower() != "content-type"}
    headers += [(k.encode(), str(v).encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
