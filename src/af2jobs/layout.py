"""Where things live in the artifact store (the S3 bucket on AWS, a directory locally): every key af2jobs reads or
writes is made here, and `check_key` is the one rule a key must pass in either store.

    input/<owner>/NAME                       uploads, in the owner's own folder (upload_prefix)
    jobs/<id>/input.fasta                    the job's input as canonical FASTA, written by the service at submit
    jobs/<id>/log.txt                        the job's log
    jobs/<id>/supplied/<slug>.a3m|.sto       an MSA the request brought for a record (its search is skipped)
    jobs/<id>/output/<slug>/...              a record's published results
    jobs/<id>/output/predictions.json        the records' best models and scores, published last
    jobs/<id>/output/gpu_summary.json        the GPU agent's summary of the prediction (AWS)
    jobs/<id>/work/<slug>/...                a record's work dir between the MSA and the predict stage
    jobs/<id>/work/.batch/<batch id>.json    what a failed Batch job said about itself (AWS); ".batch": no slug
                                             starts with a dot
    cache/msa/<key>/..., cache/msa/databases.json
                                             the MSA cache shared through S3 (AWS), outside the store's top levels:
                                             it belongs to no job

The local worker's files mirror these keys under the artifact directory, so deleting a job's prefix removes them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from af2jobs import errors
from af2jobs.atomic import TMP_PREFIX

TOP_LEVELS = ("input", "jobs")
INPUT_NAME = "input.fasta"
LOG_NAME = "log.txt"
PREDICTIONS = "predictions.json"
GPU_SUMMARY = "gpu_summary.json"
# An artifacts entry whose name starts with this names an AWS resource (the execution, a Batch job), not an object
# in the store; readers that turn artifacts into links skip it.
REFERENCE_PREFIX = "aws:"
LOG_STREAM_PREFIX = f"{REFERENCE_PREFIX}log:"  # + stage: the CloudWatch log stream of the stage's Batch job


def log_stream_artifact(stage: str) -> str:
    return f"{LOG_STREAM_PREFIX}{stage}"
MSA_CACHE_PREFIX = "cache/msa"
MSA_MANIFEST_KEY = f"{MSA_CACHE_PREFIX}/databases.json"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str, *, prefix: bool = False) -> str:
    """A store key's problems as ValidationError: absolute, '..', backslashes, control characters, unknown top
    level, the in-flight writes' prefix. With prefix=True a trailing '/' (a directory-like prefix) is allowed."""
    if not isinstance(key, str) or not key:
        raise errors.ValidationError("a store key must be a non-empty string", field="key")
    if key.startswith("/"):
        raise errors.ValidationError(f"store key {key!r} must be relative", field="key")
    if "\\" in key or _CONTROL_RE.search(key):
        raise errors.ValidationError(f"store key {key!r} has a backslash or control character", field="key")
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts = parts[:-1]
    if any(p in ("", ".", "..") for p in parts):
        raise errors.ValidationError(f"store key {key!r} has an empty, '.' or '..' segment", field="key")
    if parts[0] not in TOP_LEVELS or (not prefix and len(parts) < 2):
        raise errors.ValidationError(f"store key {key!r} must be under {' or '.join(TOP_LEVELS)}/", field="key")
    if any(p.startswith(TMP_PREFIX) for p in parts):
        raise errors.ValidationError(f"store key {key!r} uses the reserved prefix {TMP_PREFIX}", field="key")
    return key


def is_reference(artifact_name: str) -> bool:
    """Whether an artifacts entry names an AWS resource rather than an object in the artifact store."""
    return artifact_name.startswith(REFERENCE_PREFIX)


def upload_prefix(owner: str) -> str:
    """input/<owner>/, the folder an owner's uploads go in; the owner is percent-encoded into one path segment
    (an owner 'lab/ann' uploads under input/lab%2Fann/)."""
    segment = quote(owner, safe="@+")
    if not segment.strip("."):  # '.' and '..' would not be a folder of their own
        segment = segment.replace(".", "%2E")
    return f"input/{segment}/"


def job_prefix(job_id: str) -> str:
    """jobs/<id>/: everything of one job (the trailing '/' keeps job "ab" from matching job "abc")."""
    return f"jobs/{job_id}/"


def input_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}{INPUT_NAME}"


def log_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}{LOG_NAME}"


SUPPLIED = "supplied"


def supplied_msa_name(slug: str, fmt: str) -> str:
    """The job's artifacts name of a record's supplied MSA (its store key is under the job's prefix)."""
    return f"{SUPPLIED}/{slug}.{fmt}"


def supplied_msa_key(job_id: str, slug: str, fmt: str) -> str:
    return f"{job_prefix(job_id)}{supplied_msa_name(slug, fmt)}"


def output_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}output/"


def output_key(job_id: str, name: str) -> str:
    """A published file: `name` is "<slug>/<file>" for a record's result, or a job-wide summary's name."""
    return f"{output_prefix(job_id)}{name}"


def predictions_key(job_id: str) -> str:
    return output_key(job_id, PREDICTIONS)


def gpu_summary_key(job_id: str) -> str:
    return output_key(job_id, GPU_SUMMARY)


def work_prefix(job_id: str, slug: str) -> str:
    return check_key(f"{job_prefix(job_id)}work/{slug}/", prefix=True)


def work_root(job_id: str) -> str:
    """jobs/<id>/work/: every record's work dir (the stages' internals: markers, features, prepared inputs)."""
    return f"{job_prefix(job_id)}work/"


def withheld(job_id: str, key: str, *, succeeded: bool) -> bool:
    """Whether the API keeps `key` of the job from its owner (neither listed, served nor linked): the work dirs,
    which are the stages' internals, and the results under output/ until the job SUCCEEDED (they are published at
    the end, and a publish cut short leaves files that are no results)."""
    return key.startswith(work_root(job_id)) or (not succeeded and key.startswith(output_prefix(job_id)))


def failure_key(job_id: str, batch_job_id: str) -> str:
    return check_key(f"{job_prefix(job_id)}work/.batch/{batch_job_id}.json")


def msa_entry_prefix(cache_key: str) -> str:
    return f"{MSA_CACHE_PREFIX}/{cache_key}/"


__all__ = [
    "GPU_SUMMARY", "INPUT_NAME", "LOG_NAME", "LOG_STREAM_PREFIX", "log_stream_artifact", "MSA_CACHE_PREFIX", "MSA_MANIFEST_KEY", "PREDICTIONS", "REFERENCE_PREFIX", "TOP_LEVELS",
    "check_key", "failure_key", "gpu_summary_key", "input_key", "is_reference", "job_prefix", "log_key", "msa_entry_prefix",
    "output_key", "output_prefix", "predictions_key", "supplied_msa_key", "supplied_msa_name", "upload_prefix", "withheld",
    "work_prefix", "work_root",
]
