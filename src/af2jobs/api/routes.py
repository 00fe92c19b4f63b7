"""The job API as one Powertools Router, served by APIGatewayRestResolver on Lambda and HttpResolverLocal locally.

The seed's CANCEL verb is not HTTP: cancelling is `POST /jobs/{id}/cancel` and `POST /jobs/cancel`.

Handlers reach the services only through the `authenticated` dependency (context.py) and read the request only
through what Powertools passes them: never `router.current_event`, which points at whichever app included the
Router last when several apps live in one process (tests, or a Lambda and a local server side by side).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Annotated, Any, cast
from urllib.parse import quote

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.api_gateway import Response, Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic_core import PydanticCustomError

from af2jobs import errors, layout
from af2jobs.api.context import ApiContext, Caller, admit, api_context, authenticated
from af2jobs.api.schemas import (
    Deleted, ErrorBody, FileLink, FileList, JobDetail, JobList, JobPage, JobView, UploadRequest, UploadTicket, Uploaded,
)
from af2jobs.api.viewtext import view
from af2jobs.models import Job, JobState, Principal
from af2jobs.layout import upload_prefix
from af2jobs.request import JobRequest, check_file_name, field_named_by
from af2jobs.ports import MAX_PAGE, ArtifactStore

log = logging.getLogger(__name__)

router = Router()

JOB_ID = r"^[0-9a-f]{32}$"
LOG_TAIL = 50
JSON = content_types.APPLICATION_JSON
OCTET_STREAM = "application/octet-stream"
UPLOAD_SECONDS = 3600

AuthCaller = Annotated[Caller, Depends(authenticated)]
JobId = Annotated[str, Path(pattern=JOB_ID, description="A job id (32 hex digits).")]
AllOwners = Annotated[
    bool, Query(description="Admins only: act on every owner's jobs, not just the caller's own.")
]


class BadRequestError(errors.ValidationError):
    """The request cannot be read at all (malformed JSON); 422 is kept for well-formed but invalid input."""

    http_status = 400


class UnsupportedMediaError(errors.ValidationError):
    http_status = 415


# ---------------------------------------------------------------------------------------------------------------
# OpenAPI response documentation

_ERROR_DOCS = {
    400: "The body is not valid JSON.",
    401: "No API key, or an unknown or revoked one.",
    403: "Only an admin may do this.",
    404: "No such job (or it belongs to another owner).",
    409: "The job's state does not allow this (e.g. deleting an unfinished job).",
    413: "The request body is larger than AF2_MAX_REQUEST_BYTES.",
    415: "The body is not JSON.",
    422: "A parameter or body field is invalid; `field` names it.",
}


def _doc(status: int, description: str, *failures: int, **extra: Any) -> dict[int, OpenAPIResponse]:
    """Responses for OpenAPI: the success (its schema from the return annotation) plus our error body for each
    failure status. Every route can answer 401 and 422 (a malformed parameter)."""
    success: dict[str, Any] = {"description": description, **extra}
    responses: dict[int, OpenAPIResponse] = {status: cast(OpenAPIResponse, success)}
    for code in sorted({401, 422, *failures}):
        responses[code] = {"description": _ERROR_DOCS[code], "content": {JSON: {"model": ErrorBody}}}
    return responses


# ---------------------------------------------------------------------------------------------------------------
# Views


def _now() -> datetime:
    return datetime.now(timezone.utc)


def durations(job: Job, now: datetime | None = None) -> dict[str, float]:
    """Seconds spent in each state; the current state counts up to `now`."""
    now = now or _now()
    out: dict[str, float] = {}
    for state, phase in job.phases.items():
        end = datetime.fromisoformat(phase.ended_at) if phase.ended_at else now
        out[state] = round(max(0.0, (end - datetime.fromisoformat(phase.started_at)).total_seconds()), 3)
    return out


def file_url(api: ApiContext, job_id: str, key: str) -> str | None:
    """Where a client can fetch `key`: the local download route, or the store's own (presigned) URL. None for a
    key the route cannot serve (outside the job's directory) or that the store knows to be gone."""
    prefix = layout.job_prefix(job_id)
    if api.serve_files:
        if not key.startswith(prefix):
            return None  # the download route serves the job's own directory only
        return f"/jobs/{job_id}/file?path={quote(key[len(prefix):], safe='/')}"
    try:
        return api.store.url(key)
    except errors.NotFoundError:
        return None


def log_tail(store: ArtifactStore, job_id: str, lines: int = LOG_TAIL) -> list[str]:
    try:
        data = store.get_bytes(layout.log_key(job_id))
    except errors.NotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def job_log(api: ApiContext, job: Job, lines: int = LOG_TAIL) -> list[str]:
    """The job's latest log lines: its running stage's live log where there is one (AWS), else the stored log."""
    live = api.logs.tail(job, lines) if api.logs is not None else None
    return live if live is not None else log_tail(api.store, job.id, lines)


def submit_estimate(job: Job, store: ArtifactStore) -> dict[str, Any] | None:
    """The estimated time and cost of a job just submitted, from its stored input (None if that cannot be read:
    an estimate must never fail a submission that succeeded)."""
    from af2jobs.cost import estimate_request

    try:
        records = job.request.records(store.get_bytes(layout.input_key(job.id)))
        return estimate_request(job.request, [len(r.sequence) for r in records])
    except (errors.Af2JobsError, KeyError, ValueError):
        log.warning("job %s: no cost estimate", job.id, extra={"job_id": job.id})
        return None


def detail(job: Job, api: ApiContext) -> JobDetail:
    links = {name: url for name, key in job.artifacts.items()
             if not layout.is_reference(name) and not withheld(job, key)
             and (url := file_url(api, job.id, key)) is not None}
    return JobDetail.model_validate(
        {**job.to_public(), "durations": durations(job), "links": links, "log": job_log(api, job),
         "reports": {name.rsplit("/", 1)[0]: url for name, url in links.items() if name.endswith("/report.html")}}
    )


def withheld(job: Job, key: str) -> bool:
    """Whether `key` is kept from the caller (layout.withheld: the work dirs, and output/ until SUCCEEDED)."""
    return layout.withheld(job.id, key, succeeded=job.state is JobState.SUCCEEDED)


def file_key(job_id: str, path: str) -> str:
    """The store key of `path` inside the job's directory; ValidationError for anything that could leave it."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(ord(c) < 0x20 or c == "\x7f" for c in path)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise errors.ValidationError(
            "path must be a relative path inside the job's directory, without '.', '..' or empty segments",
            field="path",
        )
    return f"{layout.job_prefix(job_id)}{path}"


# ---------------------------------------------------------------------------------------------------------------
# Routes


@router.post(
    "/jobs",
    status_code=201,
    operation_id="submitJob",
    summary="Submit a prediction job",
    tags=["jobs"],
    responses=_doc(
        201,
        "The queued job (for an array body: {jobs: [...]}, in the array's order). A retry with the same "
        "Idempotency-Key returns the first job(s).",
        400, 404, 409, 413, 415,
        headers={"Location": {"description": "The job's URL (one job only).", "schema": {"type": "string"}}},
    ),
)
def submit_job(
    body: Annotated[
        JobRequest | list[JobRequest],
        Body(description="One job, or an array of jobs (the original platform's request file): every element is "
                         "checked first, and all or none are created. Give exactly one of file_name or sequence."),
    ],
    caller: AuthCaller,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Any string unique to this submission; retrying with it returns the same job.",
        ),
    ] = None,
) -> Response[JobView | JobList]:
    if isinstance(body, list):
        jobs = caller.service.submit_many(caller.principal, body, idempotency_key)
        log.info("%d jobs submitted by %s: %s", len(jobs), caller.principal.owner, " ".join(j.id for j in jobs))
        views = [view(j).model_copy(update={"estimate": submit_estimate(j, caller.api.store)}) for j in jobs]
        return Response(status_code=201, content_type=JSON, body=JobList(jobs=views))
    job = caller.service.submit(caller.principal, body, idempotency_key)
    log.info("job %s submitted by %s", job.id, caller.principal.owner, extra={"job_id": job.id})
    return Response(
        status_code=201,
        content_type=JSON,
        body=view(job).model_copy(update={"estimate": submit_estimate(job, caller.api.store)}),
        headers={"Location": f"{caller.path.rstrip('/')}/{job.id}"},
    )


@router.get(
    "/jobs",
    operation_id="listJobs",
    summary="List the caller's jobs, newest first (an admin's listing has every owner's)",
    tags=["jobs"],
    responses=_doc(200, "One page of jobs."),
)
def list_jobs(
    caller: AuthCaller,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
    next_token: Annotated[
        str | None, Query(min_length=1, max_length=2000, description="From the previous page.")
    ] = None,
) -> Response[JobPage]:
    try:
        jobs, token = caller.service.list(caller.principal, state=state, limit=limit, token=next_token)
    except errors.ValidationError as exc:
        if exc.field != "token":
            raise
        # The repository calls it a token; the API's parameter is next_token.
        raise errors.ValidationError("next_token is not a token from a previous page", field="next_token") from None
    # The page's JSON text, from each job's text kept since an earlier page (api/viewtext.py): the JobPage as the
    # resolver would write it, without building and encoding it again.
    return Response(status_code=200, content_type=JSON, body=caller.api.views.page(jobs, token))


@router.get(
    "/jobs/<job_id>",
    operation_id="getJob",
    summary="One job: state, progress, phase durations, cost, artifact links and the last log lines",
    tags=["jobs"],
    responses=_doc(200, "The job.", 404),
)
def get_job(job_id: JobId, caller: AuthCaller) -> JobDetail:
    return detail(caller.service.get(caller.principal, job_id), caller.api)


@router.post(
    "/jobs/<job_id>/cancel",
    operation_id="cancelJob",
    summary="Cancel a job (queued: at once; running: CANCELLING until its compute stops)",
    tags=["jobs"],
    responses=_doc(200, "The job after the request.", 404, 409),
)
def cancel_job(job_id: JobId, caller: AuthCaller) -> JobView:
    return view(caller.service.cancel(caller.principal, job_id))


@router.post(
    "/jobs/cancel",
    operation_id="cancelJobs",
    summary="Cancel all of the caller's unfinished jobs",
    tags=["jobs"],
    responses=_doc(200, "The jobs that were cancelled or are being cancelled.", 403),
)
def cancel_jobs(caller: AuthCaller, all_owners: AllOwners = False) -> JobList:
    jobs = caller.service.cancel_all(caller.principal, everyone=all_owners)
    return JobList(jobs=[view(j) for j in jobs])


@router.delete(
    "/jobs/<job_id>",
    operation_id="deleteJob",
    summary="Delete a finished job: its files, then its record",
    tags=["jobs"],
    responses=_doc(200, "The deleted job's id.", 404, 409),
)
def delete_job(job_id: JobId, caller: AuthCaller) -> Deleted:
    caller.service.delete(caller.principal, job_id)
    return Deleted(deleted=[job_id])


@router.delete(
    "/jobs",
    operation_id="deleteJobs",
    summary="Delete all of the caller's finished jobs (unfinished ones are left alone)",
    tags=["jobs"],
    responses=_doc(200, "The deleted jobs' ids.", 403),
)
def delete_jobs(caller: AuthCaller, all_owners: AllOwners = False) -> Deleted:
    return Deleted(deleted=caller.service.delete_finished(caller.principal, everyone=all_owners))


@router.get(
    "/jobs/<job_id>/files",
    operation_id="listJobFiles",
    summary="Every file of a job, with a URL to fetch it",
    tags=["files"],
    responses=_doc(200, "The job's files.", 404),
)
def list_job_files(job_id: JobId, caller: AuthCaller) -> FileList:
    job = caller.service.get(caller.principal, job_id)
    prefix = layout.job_prefix(job.id)
    files = []
    for key in caller.api.store.list(prefix):
        if withheld(job, key):
            continue
        url = file_url(caller.api, job.id, key)
        if url is not None:
            files.append(FileLink(path=key[len(prefix) :], url=url))
    return FileList(files=files)


@router.get(
    "/jobs/<job_id>/file",
    operation_id="getJobFile",
    summary="One file of a job: its bytes (local server) or a redirect to a presigned URL (AWS)",
    tags=["files"],
    responses=_doc(
        200,
        "The file's bytes.",
        404,
        content={OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    )
    | {
        307: {
            "description": "AWS: fetch the file from the presigned Location URL (without the API key).",
            "headers": {"Location": {"description": "A presigned URL.", "schema": {"type": "string"}}},
            "content": {},  # no body; without this the return annotation's schema would be claimed
        }
    },
)
def get_job_file(
    job_id: JobId,
    path: Annotated[str, Query(min_length=1, max_length=1000, description="Path inside the job's directory.")],
    caller: AuthCaller,
) -> Response[bytes]:
    job = caller.service.get(caller.principal, job_id)  # 404 for another owner's job, before any store access
    return file_response(caller.api, job, path)


def file_response(api: ApiContext, job: Job, path: str) -> Response[bytes]:
    """One published file of the job: its bytes (local server) or a redirect to a freshly presigned URL."""
    key = file_key(job.id, path)
    if withheld(job, key):
        if key.startswith(layout.work_root(job.id)):
            raise errors.NotFoundError(f"{path} is not a file of job {job.id}: work/ holds the stages' own files",
                                       field="path")
        raise errors.NotFoundError(f"job {job.id} is {job.state.value}: {path} is not one of its results",
                                   field="path")
    if not api.serve_files:
        return Response(status_code=307, headers={"Location": api.store.url(key)}, body=b"")
    data = api.store.get_bytes(key)
    name = path.rsplit("/", 1)[-1]
    return Response(
        status_code=200,
        content_type=OCTET_STREAM,
        body=data,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


# Whoever holds a link the API signed may fetch that one file of that job, until the link expires.
LINK_READER = Principal(owner="signed link", admin=True)
LinkApi = Annotated[ApiContext, Depends(api_context)]


@router.get(
    "/jobs/<job_id>/link",
    operation_id="followJobLink",
    summary="One file of a job through a link from its mail: no API key, until the link expires",
    description="The links in a job's mail point here; each use sends the file, or a freshly signed URL to it.",
    tags=["files"],
    security=[{}],
    responses={
        **{code: doc for code, doc in _doc(
            200, "The file's bytes.", 404, content={OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        ).items() if code != 401},  # no key is asked for
        403: {"description": "The link was changed, signed by another server, or has expired.",
              "content": {JSON: {"model": ErrorBody}}},
        307: {
            "description": "AWS: fetch the file from the presigned Location URL.",
            "headers": {"Location": {"description": "A presigned URL.", "schema": {"type": "string"}}},
            "content": {},
        }
    },
)
def follow_job_link(
    job_id: JobId,
    path: Annotated[str, Query(min_length=1, max_length=1000, description="Path inside the job's directory.")],
    expires: Annotated[int, Query(ge=0, le=2**40, description="Until when the link works (Unix time).")],
    sig: Annotated[str, Query(min_length=1, max_length=100, description="The API's signature of the link.")],
    api: LinkApi,
) -> Response[bytes]:
    if api.links is None:
        raise errors.ForbiddenError("this API signs no links (on AWS: AF2_LINK_SECRET_ARN and AF2_API_URL)",
                                    field="sig")
    api.links.check(job_id, path, expires, sig)  # before anything is read: a forged link learns nothing
    return file_response(api, api.service.get(LINK_READER, job_id), path)


@router.post(
    "/uploads",
    status_code=201,
    operation_id="createUpload",
    summary="Where to upload a file that a job's file_name (or an MSA's) will name",
    tags=["files"],
    responses=_doc(201, "Where to PUT the file: a presigned URL on AWS, this API's PUT /uploads locally."),
)
def create_upload(body: Annotated[UploadRequest, Body()], caller: AuthCaller) -> Response[UploadTicket]:
    name = _upload_name(body.file_name)
    if caller.api.serve_files:  # the local server takes the file itself
        ticket = UploadTicket(file_name=name, url=f"/uploads?file_name={quote(name, safe='/')}", through_api=True,
                              max_bytes=caller.api.max_upload_bytes)
    else:
        url = caller.api.store.upload_url(upload_prefix(caller.principal.owner) + name, UPLOAD_SECONDS)
        if url is None:
            raise errors.ConfigurationError("this deployment's store cannot sign upload URLs")
        ticket = UploadTicket(file_name=name, url=url, through_api=False, expires_in=UPLOAD_SECONDS)
    return Response(status_code=201, content_type=JSON, body=ticket)


@router.put(
    "/uploads",
    status_code=201,
    operation_id="putUpload",
    summary="Upload a file to your folder input/<owner>/ (the local server; on AWS, PUT to POST /uploads' URL)",
    tags=["files"],
    responses=_doc(201, "The file is stored.", 400, 413),
)
def put_upload(
    file_name: Annotated[str, Query(min_length=1, max_length=1000, description="Its path in input/<owner>/.")],
    caller: AuthCaller,
) -> Response[Uploaded]:
    if not caller.api.serve_files:
        raise BadRequestError("on AWS a file goes straight to storage: PUT it to the URL that POST /uploads gives",
                              field="file_name")
    name = _upload_name(file_name)
    body = caller.event.decoded_body or ""
    data = body.encode("utf-8") if isinstance(body, str) else body
    caller.api.store.put_bytes(upload_prefix(caller.principal.owner) + name, data)
    log.info("%s uploaded %s (%d bytes)", caller.principal.owner, name, len(data))
    return Response(status_code=201, content_type=JSON, body=Uploaded(file_name=name, bytes=len(data)))


def _upload_name(name: str) -> str:
    try:
        return check_file_name(name)
    except PydanticCustomError as exc:
        raise errors.ValidationError(exc.message(), field="file_name") from None


# ---------------------------------------------------------------------------------------------------------------
# Errors: every failure leaves as ErrorBody with its status; this is the only place statuses are chosen.


_INTERNAL: dict[str, Any] = {"error": "InternalError", "message": "internal error; see the server log", "field": None}


def error_response(exc: errors.Af2JobsError) -> Response[dict[str, Any]]:
    if exc.http_status >= 500:
        # A server-side failure (configuration, a stage): the detail is for the operator's log, not the caller.
        log.error("request failed: %s: %s", type(exc).__name__, exc.message)
        return Response(status_code=exc.http_status, content_type=JSON, body=_INTERNAL)
    headers = {"WWW-Authenticate": 'Bearer realm="af2jobs"'} if exc.http_status == 401 else None
    return Response(status_code=exc.http_status, content_type=JSON, body=exc.to_dict(), headers=headers)


@router.exception_handler(errors.Af2JobsError)
def handle_af2jobs_error(exc: errors.Af2JobsError) -> Response[dict[str, Any]]:
    return error_response(exc)


@router.exception_handler(RouteNotFound)
def handle_unknown_route(exc: RouteNotFound) -> Response[dict[str, Any]]:
    return error_response(errors.NotFoundError("no such route; see /openapi.json for the API"))


@router.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_media(exc: RequestUnsupportedContentType) -> Response[dict[str, Any]]:
    return error_response(UnsupportedMediaError("send the body as JSON (Content-Type: application/json)", field="body"))


@router.exception_handler(ServiceError)
def handle_service_error(exc: ServiceError) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc.msg), "field": None}
    return Response(status_code=int(exc.status_code), content_type=JSON, body=body)


@router.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response[dict[str, Any]]:
    # Log the traceback (never the request: it carries the key); the caller gets no internals.
    log.exception("unhandled error in the API")
    return Response(status_code=500, content_type=JSON, body=_INTERNAL)


# What pydantic says when the body is not of a union member's shape (an array read as one job, or the reverse).
_NOT_THIS_SHAPE = frozenset({"list_type", "model_type", "dict_type", "model_attributes_type"})


def _one_branch(errs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A body is one job or an array of jobs (JobRequest | list[JobRequest]): pydantic reports both readings, each
    under its member's label. Keep the reading the body had (an object or an array), without the label; an array's
    element index then stands as "[i]" at the head of the field."""
    def member(err: dict[str, Any]) -> str | None:
        loc = err.get("loc") or ()
        return str(loc[1]) if len(loc) > 1 and loc[0] == "body" and "JobRequest" in str(loc[1]) else None

    labels = {member(e) for e in errs} - {None}
    if not labels:
        return errs
    not_this = {member(e) for e in errs if e.get("type") in _NOT_THIS_SHAPE and len(e.get("loc") or ()) == 2}
    keep = (labels - not_this) or labels
    out = []
    for err in errs:
        label = member(err)
        if label is None or label not in keep:
            continue
        rest = tuple(err["loc"][2:])
        if label.startswith("list[") and rest and isinstance(rest[0], int):
            out.append({**err, "loc": ("body", f"[{rest[0]}]", *rest[1:]), "index": rest[0]})
        else:
            out.append({**err, "loc": ("body", *rest)})
    return out


def from_request_validation(exc: RequestValidationError) -> errors.ValidationError:
    """Powertools' validation errors as one af2jobs error naming the first field at fault."""
    messages: list[str] = []
    fields: list[str] = []
    for err in _one_branch(list(exc.errors())):
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "invalid JSON")
            return BadRequestError(f"the body is not valid JSON: {detail}", field="body")
        where, name = _location(err.get("loc") or ())
        whole = name is None or (name.startswith("[") and "." not in name)  # the request (or an element) as a whole
        if where == "body" and whole and err.get("type") == "af2jobs" and (named := field_named_by(err)):
            name = f"{name}.{named}" if name else named  # a whole-request rule of JobRequest's names its field
        if name or where == "body":
            fields.append(name or "body")  # ('body',): the body as a whole is missing or not an object
        message = _message(err, where, name)
        messages.append(f"element {err['index']}: {message}" if "index" in err else message)
    return errors.ValidationError("; ".join(messages), field=fields[0] if fields else None)


def _location(loc: tuple[Any, ...] | list[Any]) -> tuple[str, str | None]:
    """('body', 'gpu') -> ('body', 'gpu'); ('query', 'limit') -> ('query', 'limit'); ('body',) -> ('body', None)."""
    where = str(loc[0]) if loc else "request"
    name = ".".join(str(p) for p in loc[1:]) or None
    return where, name


def _message(err: dict[str, Any], where: str, name: str | None) -> str:
    kind, msg = err.get("type"), errors.pydantic_message(err)
    if kind == "af2jobs":  # JobRequest's own messages already name the field
        return msg
    label = name or where
    if kind == "missing":
        return f"{label} is required"
    if kind == "extra_forbidden":
        return f"{label} is not a request field (known: {', '.join(JobRequest.model_fields)})"
    return f"{label}: {msg}"


def validation_error_response(exc: RequestValidationError, event: BaseProxyEvent, api: ApiContext) -> Response:
    """Powertools validates parameters and the body before any middleware or dependency runs; the size and key
    checks must still win (an anonymous caller learns nothing about its input, a huge body is 413 not 422)."""
    try:
        admit(event, api)
    except errors.Af2JobsError as first:
        return error_response(first)
    return error_response(from_request_validation(exc))
