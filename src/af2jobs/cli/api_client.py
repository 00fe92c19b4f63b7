"""The job API's HTTP client for the command line (httpx): one call, its JSON answer or the API's error as an
af2jobs error; downloads that follow the storage redirect without the key."""

from __future__ import annotations

import json
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from af2jobs import __version__, atomic, errors

API_TIMEOUT_S = 30.0
DOWNLOAD_TIMEOUT_S = 300.0
_CHUNK = 1 << 20
# The API's status -> the error main.py prints and exits with (2 for input to fix, 1 otherwise).
_ERRORS_BY_STATUS: dict[int, type[errors.Af2JobsError]] = {
    400: errors.ValidationError,
    401: errors.AuthError,
    403: errors.ForbiddenError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.PayloadTooLargeError,
    415: errors.ValidationError,
    422: errors.ValidationError,
}


class ApiUnreachableError(errors.Af2JobsError):
    """The API could not be reached at all (refused, unknown host, timeout, TLS)."""


@dataclass
class ApiClient:
    """The job API over httpx. Redirects are never followed with the key: the download route's redirect (to an S3
    presigned URL, which refuses a second credential and must not see the key anyway) is followed by hand,
    without it."""

    base_url: str
    key: str
    timeout: float = API_TIMEOUT_S
    user_agent: str = field(default=f"af2jobs/{__version__}")
    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(follow_redirects=False, headers={"User-Agent": self.user_agent})
        return self._http

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API call; the decoded JSON answer, or the API's error raised as an af2jobs error."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        request = self.http.build_request(method, self.url(path), params=params, json=body,
                                          headers={"Accept": "application/json", **self._key(), **(headers or {})},
                                          timeout=self.timeout)
        response = _send(self.http, request)
        return response.json() if response.content else None

    def download(self, url: str, dest: Path) -> int:
        """Fetch `url` (an API route, or a presigned URL it redirects to) into `dest`; returns the bytes written."""
        authorize = not is_absolute(url)
        request = self.http.build_request("GET", self.url(url) if authorize else url,
                                          headers=self._key() if authorize else {}, timeout=DOWNLOAD_TIMEOUT_S)
        response = _send(self.http, request, stream=True)
        try:
            if response.is_redirect:
                # Only the API itself gets the key; the presigned URL carries its own credentials.
                location = response.headers["Location"]
                response.close()
                response = _send(self.http, self.http.build_request("GET", location, timeout=DOWNLOAD_TIMEOUT_S),
                                 stream=True)
            return _save(response, dest)
        finally:
            response.close()

    def upload(self, path: Path, file_name: str) -> dict[str, Any]:
        """Put a local file into the caller's folder input/<owner>/ as `file_name` (POST /uploads, then a PUT to
        the URL it gives: this API locally, a presigned S3 URL without the key on AWS); the API's answer."""
        ticket = self.call("POST", "/uploads", body={"file_name": file_name})
        url = ticket["url"] if is_absolute(ticket["url"]) else self.url(ticket["url"])
        headers = {"Content-Type": "application/octet-stream", **(self._key() if ticket["through_api"] else {})}
        request = self.http.build_request("PUT", url, content=path.read_bytes(), headers=headers,
                                          timeout=DOWNLOAD_TIMEOUT_S)
        response = _send(self.http, request)
        return response.json() if ticket["through_api"] and response.content else {"file_name": file_name}

    def _key(self) -> dict[str, str]:
        return {"Authorization": self.key}  # the bare key, as the seed's clients send it


def _send(client: httpx.Client, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
    """Send `request`; API errors and network failures become af2jobs errors with a message for people. A redirect
    is returned as it is."""
    try:
        response = client.send(request, stream=stream)
    except httpx.TimeoutException:
        raise ApiUnreachableError(f"{_origin(str(request.url))} did not answer in time") from None
    except httpx.TransportError as exc:
        raise _unreachable(str(request.url), exc) from None
    if response.is_success or response.is_redirect:
        return response
    if stream:
        response.read()
    raise _api_error(response.status_code, response.content, str(request.url))


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"  # never the query: a presigned URL's query is a credential


def _reason(exc: BaseException) -> BaseException:
    """The OS-level error at the bottom of a transport error (httpx wraps httpcore, which wraps the socket's)."""
    seen: BaseException = exc
    for _ in range(10):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return seen


def _unreachable(url: str, exc: httpx.TransportError) -> ApiUnreachableError:
    where = _origin(url)
    reason = _reason(exc)
    if isinstance(reason, ConnectionRefusedError) or "refused" in str(exc).lower():
        return ApiUnreachableError(
            f"cannot connect to {where}: connection refused (is the server running? check --api-url / AF2_API_URL)"
        )
    if isinstance(reason, socket.gaierror):
        return ApiUnreachableError(f"cannot resolve the host of {where} (check --api-url / AF2_API_URL)")
    return ApiUnreachableError(f"cannot reach {where}: {exc or reason}")


def _api_error(status: int, data: bytes, url: str) -> errors.Af2JobsError:
    """The API's error body {error, message, field} as the matching af2jobs error."""
    message, field_name = None, None
    try:
        body = json.loads(data)
        if isinstance(body, dict):
            message, field_name = body.get("message"), body.get("field")
    except ValueError:
        pass
    if not isinstance(message, str):  # not our API (a proxy, API Gateway itself)
        text = data.decode("utf-8", errors="replace").strip()[:200]
        message = f"HTTP {status} from {_origin(url)}" + (f": {text}" if text else "")
    cls = _ERRORS_BY_STATUS.get(status, errors.Af2JobsError)
    return cls(f"{message} (HTTP {status})", field=field_name if isinstance(field_name, str) else None)


def is_absolute(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def _save(response: httpx.Response, dest: Path) -> int:
    """Write the body to `dest` through af2jobs.atomic: an interrupted download leaves no truncated file under the
    final name."""
    size = 0
    with atomic.replacing(dest) as out:
        for chunk in response.iter_bytes(_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


__all__ = ["ApiClient", "ApiUnreachableError", "is_absolute"]
