"""GET /jobs's page text (af2jobs.api.viewtext): the text the resolver would write for the same JobPage, each job's
part rendered once per distinct job, and anew whenever the job is not the one its text was made from."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from af2jobs.adapters.records import changed
from af2jobs.api import viewtext
from af2jobs.api.schemas import JobPage
from af2jobs.api.viewtext import JsonText, ViewTexts, listed, view
from af2jobs.models import Job, JobState
from af2jobs.request import JobRequest


def make_job(comment: str = "", **fields: Any) -> Job:
    request = JobRequest.parse({"fasta": "job1", "sequence": "MKTAYIAKQRQISFVKSHFSRQ", "comment": comment})
    return Job(owner="ann", request=request, **fields)


def resolver_text(jobs: list[Job], next_token: str | None) -> str:
    """What Powertools wrote for a route returning JobPage(jobs=[listed(j) ...]): the page dumped in JSON mode by
    alias, then json.dumps with its Encoder and compact separators."""
    from aws_lambda_powertools.shared.json_encoder import Encoder

    page = JobPage(jobs=[listed(j) for j in jobs], next_token=next_token)
    data = TypeAdapter(JobPage).dump_python(page, mode="json", by_alias=True)
    return json.dumps(data, separators=(",", ":"), cls=Encoder)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs whose view is built, in order."""
    built: list[str] = []

    def counting_view(job: Job) -> Any:
        built.append(job.id)
        return listed(job)

    monkeypatch.setattr(viewtext, "listed", counting_view)
    return built


def test_a_page_is_the_text_the_resolver_writes_for_its_jobpage() -> None:
    # Python's own spellings of what JSON encoders write differently: non-ASCII as \\u escapes (a non-BMP character
    # as a surrogate pair), an exponent as e-05 and e+16, an integer-valued float as 2.0.
    jobs = [
        make_job("naïve ✓ 😀 </script> \"quoted\" back\\slash\nnew line", cost={"dollars": 3.2e-05, "gpu_s": 1e16,
                 "n": 3, "mix": [1, 2.0, None, "é"]}),
        make_job(error={"type": "MsaError", "message": "bad «db»", "stage": "msa"}, state=JobState.FAILED,
                 artifacts={"msas/ünï.sto": "jobs/x/msas/ünï.sto"}),
        make_job(progress={"stage": "msa", "step": 1, "total": 3, "message": "jackhmmer"}, state=JobState.MSA),
    ]
    texts = ViewTexts()
    for token in (None, "eyJhIjoxfQ"):
        page = texts.page(jobs, token)
        assert isinstance(page, JsonText) and page == resolver_text(jobs, token)
    assert texts.page([], None) == resolver_text([], None) == '{"jobs":[],"next_token":null}'


def test_each_job_is_rendered_once_until_it_changes(renders: list[str]) -> None:
    jobs = [make_job(), make_job()]
    texts = ViewTexts()
    first = texts.page(jobs, None)
    # The store gives fresh copies of the same records on every read.
    assert texts.page([j.model_copy() for j in jobs], None) == first
    assert renders == [jobs[0].id, jobs[1].id]
    moved = changed(jobs[1], {"progress": {"stage": "msa", "step": 2, "total": 5}}, to=JobState.VALIDATING)
    page = json.loads(texts.page([jobs[0], moved], None))
    assert renders[2:] == [moved.id]
    assert page["jobs"][1]["state"] == "VALIDATING" and page["jobs"][1]["progress"]["step"] == 2
    assert page["jobs"][1]["version"] == 2


def test_a_job_of_the_same_id_and_version_but_other_content_gets_its_own_text(renders: list[str]) -> None:
    # Every write of a store makes a new version, but a job made by hand (or a fake store's) need not.
    job = make_job()
    texts = ViewTexts()
    texts.text(job)
    other = job.model_copy(update={"state": JobState.CANCELLED})
    assert json.loads(texts.text(other))["state"] == "CANCELLED"
    assert json.loads(texts.text(job))["state"] == "QUEUED"
    assert renders == [job.id] * 3


def test_a_field_set_on_a_job_after_it_was_rendered_is_seen(renders: list[str]) -> None:
    job = make_job()
    texts = ViewTexts()
    texts.text(job)
    job.state = JobState.CANCELLED
    assert json.loads(texts.text(job))["state"] == "CANCELLED"
    assert renders == [job.id] * 2


def test_only_the_most_recent_jobs_and_no_long_ones_are_kept(
        renders: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ViewTexts(size=2)
    a, b, c = make_job(), make_job(), make_job()
    for job in (a, b, a, c):  # a used again after b: b is the least recent when c arrives
        texts.text(job)
    texts.text(a)
    texts.text(b)
    assert renders == [a.id, b.id, c.id, b.id]
    monkeypatch.setattr(viewtext, "KEPT_CHARS", len(texts.text(a)) + 10)
    long = make_job("x" * 20)
    texts.text(long)
    texts.text(long)
    assert renders[4:] == [long.id, long.id]


def test_a_listed_job_leaves_its_inline_sequence_out_and_says_its_size() -> None:
    """A page of jobs of thousands of records each would repeat every sequence: GET /jobs/{id} has it."""
    big = ">r\n" + "MKTAYIAKQRQISFVKSHFSRQ" * 2000 + "\n"
    job = Job(owner="ann", request=JobRequest.parse({"fasta": "job1", "sequence": big}))
    listed_job = json.loads(ViewTexts().text(job))
    assert listed_job["request"]["sequence"] is None and listed_job["sequence_bytes"] == len(big)
    assert len(ViewTexts().page([job] * 50, None)) < 50 * 2000  # 50 such jobs: a page of kilobytes, not megabytes
    full = view(job).model_dump(mode="json")
    assert {k: v for k, v in listed_job.items() if k not in ("request", "sequence_bytes")} == \
        {k: v for k, v in full.items() if k != "request"}
    uploaded = Job(owner="ann", request=JobRequest.parse({"fasta": "job1", "file_name": "big.fasta"}))
    assert json.loads(ViewTexts().text(uploaded))["sequence_bytes"] is None
