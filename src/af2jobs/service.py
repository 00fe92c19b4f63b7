"""JobService: submit, list, get, cancel and delete jobs. Talks only to ports; wiring.py picks the adapters."""

from __future__ import annotations

import builtins  # JobService.list shadows the builtin inside the class
import contextlib
import logging

from af2jobs import admission, errors, layout, lifecycle
from af2jobs.fasta import FastaRecord, to_fasta
from af2jobs.models import RUNNING, TERMINAL, UNFINISHED, Job, JobError, JobEvent, JobState, Principal, new_job_id
from af2jobs.request import JobRequest
from af2jobs.ports import ArtifactStore, JobRepository, Notifier, Orchestrator, StateFilter
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

# A cancel can race the pipeline moving the job on; re-reading a few times settles it (each loss means the job
# moved forward, and there are only so many states to move through).
CANCEL_ATTEMPTS = 5
# Bulk operations page through the repository this many jobs at a time.
BULK_PAGE = 200


class JobService:
    def __init__(
        self,
        repo: JobRepository,
        store: ArtifactStore,
        orchestrator: Orchestrator,
        notifier: Notifier,
        settings: Settings,
    ) -> None:
        self.repo = repo
        self.store = store
        self.orchestrator = orchestrator
        self.notifier = notifier
        self.settings = settings

    # -- submit ----------------------------------------------------------------------------------------------

    def submit(self, principal: Principal, request: JobRequest, idempotency_key: str | None = None) -> Job:
        """Validate the input now (a FASTA error raises before anything is stored), store it under
        jobs/<id>/input.fasta, record the job as QUEUED and start it. A repeated idempotency key returns the
        first job and starts nothing."""
        job, fresh = self._store(*self._prepare(principal, request, idempotency_key))
        if fresh:
            self._launch(job)
        return job

    def submit_many(self, principal: Principal, requests: list[JobRequest],
                    idempotency_key: str | None = None) -> builtins.list[Job]:
        """Several jobs (the original platform's request file), all or none: every request and its input is
        checked before any job is stored, and an error names the element (its index) and the field. Element i
        of a batch sent with an idempotency key has the key "<key>#<i>"."""
        if not requests:
            raise errors.ValidationError("the array holds no job: give one or more", field="body")
        prepared = []
        for i, request in enumerate(requests):
            key = None if idempotency_key is None else f"{idempotency_key}#{i}"
            try:
                prepared.append(self._prepare(principal, request, key))
            except errors.Af2JobsError as exc:
                raise exc.at(i) from None
        stored: list[tuple[Job, bool]] = []
        try:
            for job, files in prepared:
                stored.append(self._store(job, files))
        except BaseException:
            for job, fresh in stored:
                if fresh:  # nothing has started them: they go without a trace
                    lifecycle.finish_cancel(self.repo, job.id, expected={JobState.QUEUED})
                    self._delete(self.repo.get(job.id))
            raise
        for job, fresh in stored:
            if fresh:
                self._launch(job)
        return [job for job, _ in stored]

    def _prepare(self, principal: Principal, request: JobRequest,
                 idempotency_key: str | None) -> tuple[Job, dict[str, bytes]]:
        """The job a request makes and the files it brings (store key -> bytes), read and checked; nothing is
        stored yet. A supplied MSA's text goes to the job's files, not onto its record."""
        records = self._records(request, principal.owner)
        admission.check_size(request, records, self.settings)
        job_id = new_job_id()
        files = {layout.input_key(job_id): to_fasta(records).encode()}  # canonical: a bare sequence gains a header
        artifacts = {layout.INPUT_NAME: layout.input_key(job_id)}
        for record, fmt, data in self._supplied_msas(request, records, principal.owner):
            name = layout.supplied_msa_name(record.slug, fmt)
            artifacts[name] = layout.supplied_msa_key(job_id, record.slug, fmt)
            files[artifacts[name]] = data
        # The record keeps the queue actually used, so the orchestrator and a re-read agree on it.
        resolved = request.model_copy(update={"que": request.queue_for(max(len(r.sequence) for r in records)),
                                              "msa": None})
        job = Job(id=job_id, owner=principal.owner, request=resolved, idempotency_key=idempotency_key,
                  artifacts=artifacts)
        return job, files

    def _supplied_msas(self, request: JobRequest, records: builtins.list[FastaRecord],
                       owner: str) -> builtins.list[tuple[FastaRecord, str, bytes]]:
        """Each supplied MSA (inline, or uploaded) checked against its record: (record, format, text)."""
        def uploaded(name: str) -> str:
            return self._uploaded_text(request.msa_upload_key(owner, name), f"msa_file_names.{name}")

        return [(record, msa.format, msa.text.encode()) for record, msa in request.own_msas(records, uploaded)]

    def _uploaded_text(self, key: str, field: str) -> str:
        try:
            data = self.store.get_bytes(key)
        except errors.NotFoundError:
            raise errors.NotFoundError(f"{field}: no object {key} (uploads are read from your own folder under "
                                       "input/); upload the file there first", field=field) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.ValidationError(f"{field}: {key} is not UTF-8 text", field=field) from None

    def _store(self, job: Job, files: dict[str, bytes]) -> tuple[Job, bool]:
        """Store the job's files and record; (the job, True), or (the first job, False) for a repeated key."""
        for key, data in files.items():
            self.store.put_bytes(key, data)
        try:
            stored = self.repo.create(job)
        except BaseException:
            self.store.delete_prefix(job.id)  # no record will ever point at it
            raise
        if stored.id == job.id:
            return stored, True
        # A repeat: the first submission owns the job; drop the input written for this attempt.
        self.store.delete_prefix(job.id)
        if stored.request != job.request:
            raise errors.ConflictError("idempotency key already used for a different request", field="idempotency_key")
        return stored, False

    def _launch(self, job: Job) -> None:
        self._start(job)
        self._notify(job, JobEvent.SUBMITTED)

    def _records(self, request: JobRequest, owner: str) -> list[FastaRecord]:
        max_length = self.settings.max_length
        key = request.upload_key(owner)
        if key is None:
            return request.records(max_length=max_length)
        try:
            data = self.store.get_bytes(key)
        except errors.NotFoundError:
            raise errors.NotFoundError(
                f"file_name: no object {key} (file_name is read from your own folder under input/); "
                "upload the FASTA there first", field="file_name"
            ) from None
        return request.records(data, max_length=max_length)

    def _start(self, job: Job) -> None:
        try:
            self.orchestrator.start(job)
        except Exception as exc:
            # The job exists but will never run: say so on the record, then let the caller see the error.
            error = JobError(type=type(exc).__name__, message=f"could not start: {exc}", stage="QUEUED")
            # A conflict here means the job already moved on (e.g. it was cancelled); the start error is still
            # the one to raise.
            with contextlib.suppress(errors.ConflictError):
                lifecycle.fail(self.repo, job.id, error, expected={JobState.QUEUED})
            raise

    # -- read ------------------------------------------------------------------------------------------------

    def get(self, principal: Principal, job_id: str) -> Job:
        """The job; NotFoundError (not Forbidden) for another owner's, so ids of others' jobs are not confirmed."""
        job = self.repo.get(job_id)
        if not principal.admin and job.owner != principal.owner:
            raise errors.NotFoundError(f"no job {job_id}", field="id")
        return job

    def list(
        self,
        principal: Principal,
        state: StateFilter = None,
        limit: int = 50,
        token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The caller's jobs, newest first (an admin's listing has every owner's)."""
        owner = None if principal.admin else principal.owner
        return self.repo.list(owner, state=state, limit=limit, token=token)

    # -- cancel ----------------------------------------------------------------------------------------------

    def cancel(self, principal: Principal, job_id: str) -> Job:
        """QUEUED jobs become CANCELLED at once; running ones CANCELLING, and the orchestrator is told to stop
        them. A CANCELLING job is asked again (safe to repeat). A finished job raises ConflictError."""
        for _ in range(CANCEL_ATTEMPTS):
            job = self.get(principal, job_id)
            try:
                return self._cancel_once(job)
            except errors.ConflictError:
                if self.repo.get(job_id).state in TERMINAL:
                    raise
                # Lost a race with the pipeline moving the job on: look again.
        raise errors.ConflictError(f"job {job_id} kept changing state; try cancelling again")

    def _cancel_once(self, job: Job) -> Job:
        if job.state in TERMINAL:
            raise errors.ConflictError(f"job {job.id} is already {job.state.value}")
        if job.state is JobState.QUEUED:
            # No compute has started; a pipeline that picks the job up later finds it CANCELLED and stops.
            cancelled = lifecycle.finish_cancel(self.repo, job.id, expected={JobState.QUEUED})
            self._notify(cancelled, JobEvent.CANCELLED)
            return cancelled
        if job.state in RUNNING:
            job = lifecycle.request_cancel(self.repo, job.id)
            self._notify(job, JobEvent.CANCEL_REQUESTED)
        # The orchestrator (or its stopped stage) moves CANCELLING on to CANCELLED.
        self.orchestrator.cancel(job)
        return job

    def cancel_all(self, principal: Principal, *, everyone: bool = False) -> builtins.list[Job]:
        """Cancel the caller's unfinished jobs (every owner's with everyone=True, admins only). Jobs that finish
        meanwhile are skipped."""
        cancelled = []
        for job in self._all(principal, UNFINISHED, everyone):
            try:
                cancelled.append(self._cancel_once(job))
            except errors.ConflictError:
                continue  # it moved on (usually to a terminal state) since it was listed
        return cancelled

    # -- delete ----------------------------------------------------------------------------------------------

    def delete(self, principal: Principal, job_id: str) -> None:
        """Remove a finished job's files, then its record; ConflictError (409) while it is unfinished."""
        job = self.get(principal, job_id)
        self._delete(job)

    def _delete(self, job: Job) -> None:
        if job.state not in TERMINAL:
            raise errors.ConflictError(f"job {job.id} is {job.state.value}; cancel it before deleting it")
        # Files first: if this fails the record survives and the delete can be retried; the other order could
        # leave files that nothing refers to any more.
        self.store.delete_prefix(job.id)
        self.repo.delete(job.id)

    def delete_finished(self, principal: Principal, *, everyone: bool = False) -> builtins.list[str]:
        """Delete the caller's finished jobs (every owner's with everyone=True, admins only); returns the ids."""
        jobs = self._all(principal, TERMINAL, everyone)
        for job in jobs:
            self._delete(job)
        return [job.id for job in jobs]

    # -- helpers ---------------------------------------------------------------------------------------------

    def _all(self, principal: Principal, states: frozenset[JobState], everyone: bool) -> builtins.list[Job]:
        # Bulk actions default to the caller's own jobs even for admins: acting on everyone's is asked for.
        if everyone and not principal.admin:
            raise errors.ForbiddenError("only an admin can act on every owner's jobs")
        owner = None if everyone else principal.owner
        jobs: builtins.list[Job] = []
        token: str | None = None
        while True:
            page, token = self.repo.list(owner, state=states, limit=BULK_PAGE, token=token)
            jobs.extend(page)
            if token is None:
                return jobs

    def _notify(self, job: Job, event: JobEvent) -> None:
        try:
            self.notifier.notify(job, event)
        except Exception:
            # The job change is already stored; failing the call now would make the client retry a submit
            # that succeeded. The failure is logged with the job id for the operator.
            log.exception("notifying %s for job %s failed", event.value, job.id, extra={"job_id": job.id})
