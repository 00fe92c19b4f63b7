"""A job's public view, and the JSON text of a page of them (GET /jobs), each job's part rendered once per distinct
job.

A page of 50 jobs is 41 KB of JSON. Validating 50 JobViews, dumping them and encoding the text was three fifths of
a list's time in the API (1.4 ms), for jobs that had mostly not changed since the page before. A job's view depends
on the job alone (no clock, no caller), so its text is kept, under the job's id and version, beside a copy of the
job it was made from; a job that is not equal to that copy is rendered anew, so no text is ever served for content
it was not made from (every write of a store makes a new version; a job made by hand need not).

The page is the text the resolver would write for the same JobPage: each view dumped in JSON mode by alias, then
encoded by Powertools' own serializer (compact json.dumps with its Encoder)."""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict

from aws_lambda_powertools.shared.json_encoder import Encoder
from pydantic import TypeAdapter

from af2jobs.api.schemas import JobPage, JobView, ListedJob
from af2jobs.models import Job

# What ApiGatewayResolver encodes a JSON body with when it is given no serializer (neither app here is).
dumps = functools.partial(json.dumps, separators=(",", ":"), cls=Encoder)
_VIEW = TypeAdapter(ListedJob)
_PAGE = TypeAdapter(JobPage)
_NO_JOBS = '"jobs":[]'
KEPT_JOBS = 2048  # two of the largest pages (ports.MAX_PAGE)
# A listed job with a long text (an error, many artifacts) is rendered every time: memory stays under about
# KEPT_JOBS x 2 x 16 KB.
KEPT_CHARS = 16_384


def view(job: Job) -> JobView:
    # Read from the job's attributes (what to_public() gives): its request, validated and frozen, is taken as it is
    # rather than dumped and validated again, which was a third of the time of a page of GET /jobs.
    return JobView.model_validate(job, from_attributes=True)


def listed(job: Job) -> ListedJob:
    """The job as a page of GET /jobs shows it: its view without the inline sequence (and that sequence's size)."""
    out = ListedJob.model_validate(job, from_attributes=True)
    if job.request.sequence is None:
        return out
    # model_copy does not validate: the request is the stored one, its sequence left out.
    return out.model_copy(update={"request": job.request.model_copy(update={"sequence": None}),
                                  "sequence_bytes": len(job.request.sequence.encode())})


class JsonText(str):
    """A response body that is already the JSON text of its route's response model: the app sends it unchanged
    (api/app.py, PreparedJsonResponses)."""


class ViewTexts:
    """The JSON text of job views, the most recently used KEPT_JOBS kept. Safe to share between threads."""

    def __init__(self, size: int = KEPT_JOBS) -> None:
        self._size = size
        self._texts: OrderedDict[tuple[str, int], tuple[Job, str]] = OrderedDict()
        self._lock = threading.Lock()

    def page(self, jobs: list[Job], next_token: str | None) -> JsonText:
        """The text of JobPage(jobs=[listed(j) for j in jobs], next_token=next_token)."""
        shell = dumps(_PAGE.dump_python(JobPage(jobs=[], next_token=next_token), mode="json", by_alias=True))
        head, tail = shell.split(_NO_JOBS, 1)  # "jobs" is the page's first field: no token text comes before it
        return JsonText(f'{head}"jobs":[{",".join(map(self.text, jobs))}]{tail}')

    def text(self, job: Job) -> str:
        """The JSON text of listed(job)."""
        key = (job.id, job.version)
        with self._lock:
            kept = self._texts.get(key)
            if kept is not None:
                self._texts.move_to_end(key)
        if kept is not None and kept[0] == job:
            return kept[1]
        text = dumps(_VIEW.dump_python(listed(job), mode="json", by_alias=True))
        if len(text) <= KEPT_CHARS:
            # A copy, in case the caller sets a field of its job later. Shallow, as the SQLite store's: no one
            # changes a job's parts in place (every change is a new record, adapters/records.py `changed`).
            with self._lock:
                self._texts[key] = (job.model_copy(), text)
                while len(self._texts) > self._size:
                    self._texts.popitem(last=False)
        return text
