"""What the API answers: the public views of a job and the error body. Requests use models.JobRequest itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from af2jobs.models import JobError, JobState, Phase, Progress

from af2jobs.request import JobRequest


class ErrorBody(BaseModel):
    """Every error the API returns, whatever the status: errors.Af2JobsError.to_dict()."""

    error: str = Field(description="The error's type, e.g. ValidationError, NotFoundError.")
    message: str
    field: str | None = Field(None, description="The request field at fault, when one is.")


class JobView(BaseModel):
    """A job as Job.to_public() shows it: the record without the caller's idempotency key."""

    model_config = ConfigDict(extra="forbid")

    id: str
    owner: str
    state: JobState
    request: JobRequest
    created_at: str
    updated_at: str
    phases: dict[str, Phase]
    progress: Progress | None = None
    error: JobError | None = None
    artifacts: dict[str, str] = Field(description="Artifact name -> store key.")
    cost: dict[str, Any] | None = None
    version: int
    finished: bool
    estimate: dict[str, Any] | None = Field(
        None, description="Submit's answer only: estimated seconds and dollars (af2jobs.cost.estimate)."
    )


class JobDetail(JobView):
    """One job with what only the single-job route computes: durations, download links and the log's tail."""

    durations: dict[str, float] = Field(
        description="Seconds spent in each state so far (the current state counts up to now)."
    )
    links: dict[str, str] = Field(
        description="Artifact name -> URL: presigned on AWS, this API's download route locally."
    )
    log: list[str] = Field(description="The last lines of jobs/<id>/log.txt, oldest first (empty if none).")
    reports: dict[str, str] = Field(
        default_factory=dict,
        description="Record -> URL of its report.html (self-contained: structure, pLDDT, PAE, MSA depth, cost).",
    )


class ListedJob(JobView):
    """A job as GET /jobs lists it: its view without the request's inline sequence (`request.sequence` is null;
    GET /jobs/{id} has it), which a page of jobs of thousands of records each would repeat in full."""

    sequence_bytes: int | None = Field(None, description="The size of the inline sequence the list leaves out; "
                                                         "null for a job whose input is a file_name.")


class JobPage(BaseModel):
    jobs: list[ListedJob]
    next_token: str | None = Field(None, description="Pass as next_token for the next page; null on the last.")


class JobList(BaseModel):
    jobs: list[JobView]


class Deleted(BaseModel):
    deleted: list[str] = Field(description="Ids of the jobs whose records and files were removed.")


class FileLink(BaseModel):
    path: str = Field(description="Path relative to the job's directory, e.g. ranked_0.pdb or msas/uniref90.sto.")
    url: str


class FileList(BaseModel):
    files: list[FileLink]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(description="The file's path inside your own folder input/<owner>/ (what a job's "
                                       "file_name then names).")


class UploadTicket(BaseModel):
    """Where to send the file: PUT its bytes to `url` (a presigned S3 URL on AWS, without the API key; this
    API's own PUT /uploads locally, with it)."""

    file_name: str
    method: str = "PUT"
    url: str
    through_api: bool = Field(description="True: the URL is this API's (send the API key); False: a presigned "
                                          "URL (send no key).")
    expires_in: int | None = Field(None, description="Seconds the URL works (a presigned URL only).")
    max_bytes: int | None = Field(None, description="The largest file the URL takes, where it has a limit.")


class Uploaded(BaseModel):
    file_name: str
    bytes: int
