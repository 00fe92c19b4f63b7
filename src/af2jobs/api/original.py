"""The original platform's routes, answered as it answered them, so that a client written for it keeps working:

    GET /            the caller's jobs             {"code": 200, "message": "OK", "data": [item, ...]}
    GET /{id}        one job                       {"code": 200, "message": "Job is RUNNING.", "data": item}
    POST /           a JSON array of jobs          {"code": 200, "message": "OK,POSTED", "data": [item, ...]}
    DELETE /         the finished jobs             {"code": 200, "message": "OK,DELETING all.", "data": [...]}
    DELETE /{id}     one finished job              {"code": 200, "message": "OK,DELETING", "data": item}
    CANCEL /         the unfinished jobs           {"code": 200, "message": "OK,CANCELING all.", "data": [...]}
    CANCEL /{id}     one unfinished job            {"code": 200, "message": "OK,CANCELING", "data": item}

As there, the HTTP status is 200 and `code` says what happened (400 a refused request, 404 no such job, 500 a
FAILED job); a key the API refuses is 401 as on every route. An item has the original's DynamoDB fields (id,
fasta, fasta_seq, file_name, job_id, job_status, model_preset, db_preset, num_multimer_predictions_per_model,
max_template_date, que, time, gpu, comment, models_to_relax; s3_url and cost once SUCCEEDED, failed_Reason once
FAILED); job_status is af2jobs' state. Every answer also carries `api`: where af2jobs' own route for the same is.

CANCEL is not an HTTP method that every parser knows: `af2 serve` reads it (cli/serve.py), and API Gateway's ANY
method carries it to the Lambda. The routes stay out of the OpenAPI document, which cannot describe a CANCEL
operation; docs/operations.md lists them."""

from __future__ import annotations

import json
from datetime import datetime
from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.api_gateway import Response, Router
from aws_lambda_powertools.event_handler.depends import Depends

from af2jobs import errors, layout
from af2jobs.api.context import Caller, authenticated
from af2jobs.models import TERMINAL, Job, JobState
from af2jobs.request import JobRequest

router = Router()

AuthCaller = Annotated[Caller, Depends(authenticated)]
CANCEL = "CANCEL"
# The methods the original answered "No such method." to: everything its routes did not take.
OTHER_ON_ROOT = ["PUT", "PATCH"]
OTHER_ON_ID = ["POST", "PUT", "PATCH"]
NOT_FOUND = "Wrong id!Please remove the id after url to scan all ids."
NO_SUCH_JOB = "No such job id to terminate."
REQUEST_FORM = ("HTTP body should be json list format: an array of jobs, each as POST /jobs takes it "
                "(fasta, file_name or sequence, model_preset, ...)")


def answer(code: int, message: str, data: Any = None, *, ours: str) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    body["api"] = f"the original platform's route; af2jobs' own: {ours} (see /openapi.json)"
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body)


def item(job: Job, caller: Caller) -> dict[str, Any]:
    """The job as the original platform's DynamoDB item."""
    from af2jobs.api.routes import file_url

    request = job.request
    out: dict[str, Any] = {
        "id": job.id, "fasta": request.fasta, "fasta_seq": _first_sequence(request), "file_name": request.file_name,
        "job_id": job.id, "job_status": job.state.value, "model_preset": request.model_preset,
        "db_preset": request.db_preset, "num_multimer_predictions_per_model": request.predictions_per_model,
        "max_template_date": request.max_template_date.isoformat(), "que": request.que,
        "time": datetime.fromisoformat(job.created_at).strftime("%a %b %d %H:%M:%S %Y"), "gpu": request.gpu,
        "comment": request.comment, "models_to_relax": request.models_to_relax,
    }
    if job.state is JobState.SUCCEEDED:
        reports = sorted(key for name, key in job.artifacts.items() if name.endswith("/report.html"))
        summary = job.artifacts.get(layout.PREDICTIONS)
        out["s3_url"] = file_url(caller.api, job.id, (reports or [summary])[0]) if reports or summary else None
        out["cost"] = round(sum(v for v in (job.cost or {}).values() if isinstance(v, (int, float))), 1)
    if job.state is JobState.FAILED and job.error is not None:
        out["failed_Reason"] = job.error.message
    return out


def _first_sequence(request: JobRequest) -> str | None:
    """What the original kept as fasta_seq: the FASTA's second line (a complex: a note), when the job is inline."""
    if request.model_preset == "multimer":
        return "This is a multimer seq"
    if request.sequence is None:
        return None
    lines = [line.strip() for line in request.sequence.splitlines() if line.strip()]
    return (lines[1] if lines and lines[0].startswith(">") and len(lines) > 1 else lines[0]) if lines else None


def _all_jobs(caller: Caller) -> list[Job]:
    jobs: list[Job] = []
    token = None
    while True:
        page, token = caller.service.list(caller.principal, limit=200, token=token)
        jobs.extend(page)
        if token is None:
            return jobs


@router.get("/", include_in_schema=False)
def list_all(caller: AuthCaller):
    jobs = _all_jobs(caller)
    if not jobs:
        return answer(200, "OK, but no job was deployed.", ours="GET /jobs")
    return answer(200, "OK", [item(j, caller) for j in jobs], ours="GET /jobs")


@router.get("/<id>", include_in_schema=False)
def get_one(id: str, caller: AuthCaller):  # noqa: A002 - the original's path parameter
    ours = f"GET /jobs/{id}"
    try:
        job = caller.service.get(caller.principal, id)
    except errors.NotFoundError:
        return answer(404, NOT_FOUND, ours=ours)
    if job.state is JobState.FAILED:
        reason = job.error.message if job.error is not None else "no reason recorded"
        return answer(500, f"Job is FAILED. {reason}", item(job, caller), ours=ours)
    if job.state is JobState.SUCCEEDED:
        return answer(200, "Job is SUCCEEDED.", item(job, caller), ours=ours)
    waiting = "" if job.state in TERMINAL else ",Please wait"
    return answer(200, f"Job is {job.state.value}{waiting}", item(job, caller), ours=ours)


@router.post("/", include_in_schema=False)
def submit(caller: AuthCaller):
    try:
        body = json.loads(caller.event.decoded_body or "")
    except (ValueError, RecursionError):
        return answer(400, REQUEST_FORM, ours="POST /jobs")
    if not isinstance(body, (list, dict)):
        return answer(400, REQUEST_FORM, ours="POST /jobs")
    try:
        requests = []
        for i, element in enumerate(body if isinstance(body, list) else [body]):
            try:
                requests.append(JobRequest.parse(element if isinstance(element, dict) else {}))
            except errors.Af2JobsError as exc:
                raise exc.at(i) from None
        jobs = caller.service.submit_many(caller.principal, requests)
    except errors.Af2JobsError as exc:
        if exc.http_status >= 500:
            raise
        return answer(400, exc.message, ours="POST /jobs")
    return answer(200, "OK,POSTED", [item(j, caller) for j in jobs], ours="POST /jobs")


@router.delete("/", include_in_schema=False)
def delete_all(caller: AuthCaller):
    finished = [j for j in _all_jobs(caller) if j.state in TERMINAL]
    deleted = set(caller.service.delete_finished(caller.principal))
    return answer(200, "OK,DELETING all.", [item(j, caller) for j in finished if j.id in deleted],
                  ours="DELETE /jobs")


@router.delete("/<id>", include_in_schema=False)
def delete_one(id: str, caller: AuthCaller):  # noqa: A002
    def delete(job: Job) -> Job:
        caller.service.delete(caller.principal, job.id)
        return job

    return _on_one(caller, id, "DELETE", f"DELETE /jobs/{id}", delete)


@router.route("/", method=CANCEL, include_in_schema=False)
def cancel_all(caller: AuthCaller):
    jobs = caller.service.cancel_all(caller.principal)
    return answer(200, "OK,CANCELING all.", [item(j, caller) for j in jobs], ours="POST /jobs/cancel")


@router.route("/<id>", method=CANCEL, include_in_schema=False)
def cancel_one(id: str, caller: AuthCaller):  # noqa: A002
    return _on_one(caller, id, CANCEL, f"POST /jobs/{id}/cancel",
                   lambda job: caller.service.cancel(caller.principal, job.id))


def _on_one(caller: Caller, job_id: str, verb: str, ours: str, act: Callable[[Job], Job]):
    """DELETE (a finished job) or CANCEL (an unfinished one) of one job, refused as the original refused them."""
    try:
        job = caller.service.get(caller.principal, job_id)
    except errors.NotFoundError:
        return answer(400, NO_SUCH_JOB, ours=ours)
    finished_only = verb == "DELETE"
    if (job.state in TERMINAL) != finished_only:
        other = "CANCEL" if finished_only else "DELETE"
        return answer(400, f"You can't {verb} a {job.state.value} job, please use {other} method.", ours=ours)
    return answer(200, "OK,DELETING" if finished_only else "OK,CANCELING", item(act(job), caller), ours=ours)


@router.route("/", method=OTHER_ON_ROOT, include_in_schema=False)
def other_on_root(caller: AuthCaller):
    return answer(400, "No such method.", ours="/openapi.json")


@router.route("/<id>", method=OTHER_ON_ID, include_in_schema=False)
def other_on_id(id: str, caller: AuthCaller):  # noqa: A002
    return answer(400, "No such method.", ours="/openapi.json")


__all__ = ["CANCEL", "item", "router"]
