"""Every link a job's notification carries opens: whatever files the job has, in whatever state it ended, each URL
in the message (its per-file `artifacts`, its short `links` list and the text's lines) fetches its file's exact
bytes through the API without a key, on the local server and (a fresh presigned URL) on Lambda."""

from __future__ import annotations

import re
import string
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from af2jobs import layout, notification
from af2jobs.models import Job, JobEvent, JobState, Principal
from af2jobs.request import JobRequest
from tests.functional.api_support import (
    SEQ, AwsParts, Keys, World, asgi_client, aws_world, close_world, lambda_client, local_keys, local_world,
    moto_parts,
)

S = JobState
BASE = "https://api.example.org/v1"
segment = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".") and s not in (".", ".."))
# (record slug, file name, bytes): binaries too (a PNG's header, a pickle's), text, empty files.
files = st.lists(st.tuples(segment, segment, st.binary(max_size=300)), max_size=6,
                 unique_by=lambda f: (f[0], f[1]))
EVENTS = {S.SUCCEEDED: JobEvent.SUCCEEDED, S.FAILED: JobEvent.FAILED, S.CANCELLED: JobEvent.CANCELLED}
PATHS = {S.SUCCEEDED: (S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED), S.FAILED: (S.VALIDATING, S.FAILED),
         S.CANCELLED: (S.CANCELLED,)}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return local_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsParts]:
    with moto_parts() as parts:
        yield parts


def finished_job(world: World, state: JobState, outputs: list[tuple[str, str, bytes]]) -> Job:
    """A job that ended in `state` with its log, the given output files (published for a SUCCEEDED job, left by a
    publish cut short otherwise) and a record's work dir, as the worker leaves them."""
    job = world.service.submit(Principal(owner="ann"), JobRequest(fasta="j", sequence=SEQ))
    world.store.put_bytes(layout.log_key(job.id), b"2026-01-01 started\n")
    artifacts = {layout.LOG_NAME: layout.log_key(job.id)}
    for slug, name, data in outputs:
        world.store.put_bytes(layout.output_key(job.id, f"{slug}/{name}"), data)
        artifacts[f"{slug}/{name}"] = layout.output_key(job.id, f"{slug}/{name}")
    world.store.put_bytes(f"{layout.work_prefix(job.id, 'j')}features.pkl", b"\x80\x04internal")
    world.repo.update(job.id, artifacts=artifacts)
    for step in PATHS[state]:
        world.repo.transition(job.id, {world.repo.get(job.id).state}, step)
    return world.repo.get(job.id)


def urls_of(message: notification.Notification) -> set[str]:
    data = message.data
    found = set(data["artifacts"].values()) | {link["url"] for link in data["links"]}
    found |= set(re.findall(r"https?://\S+", message.text))
    return found


def expected_bytes(world: World, url: str) -> bytes:
    path = dict(parse_qsl(urlsplit(url).query))["path"]
    job_id = urlsplit(url).path.split("/")[-2]
    return world.store.get_bytes(f"{layout.job_prefix(job_id)}{path}")


@given(state=st.sampled_from(list(EVENTS)), outputs=files)
@FAST
def test_every_link_of_a_local_notification_opens(tmp_path_factory, keys, state, outputs) -> None:
    world = local_world(tmp_path_factory.mktemp("w"), keys)
    try:
        client = asgi_client(world)
        job = finished_job(world, state, outputs)
        message = notification.build(job, EVENTS[state], world.store, signer=world.links)
        urls = urls_of(message)
        assert layout.log_key(job.id).removeprefix(layout.job_prefix(job.id)) in " ".join(urls)
        assert not any("work%2F" in u or "path=work/" in u for u in urls)  # the stages' internals are no link
        if state is S.SUCCEEDED:
            assert len([u for u in urls if "path=output/" in u]) == len(outputs)
        for url in urls:
            parts = urlsplit(url)
            assert url.startswith(BASE) and parts.path.endswith("/link")
            reply = client.call("GET", parts.path.removeprefix("/v1"), query=dict(parse_qsl(parts.query)))
            assert reply.status == 200, (url, reply.text)
            assert reply.body == expected_bytes(world, url)
        expires = int(dict(parse_qsl(urlsplit(next(iter(urls))).query))["expires"])
        assert message.data["links_expire_at"] == datetime.fromtimestamp(expires, timezone.utc).isoformat(
            timespec="seconds")
    finally:
        close_world(world)


@given(state=st.sampled_from(list(EVENTS)), outputs=files)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_every_link_of_an_aws_notification_sends_to_its_file(tmp_path_factory, aws, state, outputs) -> None:
    world = aws_world(aws, tmp_path_factory.mktemp("w"))
    client = lambda_client(world)
    job = finished_job(world, state, outputs)
    message = notification.build(job, EVENTS[state], world.store, signer=world.links)
    for url in urls_of(message):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        reply = client.call("GET", parts.path.removeprefix("/v1"), query=query)
        assert reply.status == 307, (url, reply.text)
        location = urlsplit(reply.headers["location"])
        key = f"{layout.job_prefix(job.id)}{query['path']}"
        assert location.path.endswith("/" + key)
        assert world.store.get_bytes(key) == expected_bytes(world, url)


def test_links_expire_when_the_message_says(tmp_path: Path, keys: Keys) -> None:
    """One expiry for the whole message, a Unix time in every URL, the same instant in links_expire_at."""
    world = local_world(tmp_path, keys)
    job = finished_job(world, S.SUCCEEDED, [("j", "ranked_0.pdb", b"ATOM\n"), ("j", "plddt.png", b"\x89PNG")])
    message = notification.build(job, JobEvent.SUCCEEDED, world.store, signer=world.links)
    stamps = {dict(parse_qsl(urlsplit(u).query))["expires"] for u in urls_of(message)}
    assert len(stamps) == 1 and next(iter(stamps)).isdigit()
    close_world(world)
