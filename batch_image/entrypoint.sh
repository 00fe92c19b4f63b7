#!/usr/bin/env bash
# Entrypoint of both Batch images: checks what the job needs from the instance, says where it runs, then becomes
# the job's command (`python -m af2jobs.awsrun.batch msa|predict --job-id ID`) so that TerminateJob's signal reaches it.
set -euo pipefail

say() { printf 'af2jobs-entrypoint: %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
  say "no command given; a Batch job definition passes e.g. python -m af2jobs.awsrun.batch msa --job-id ID"
  exit 2
fi

# The databases and parameters are on the shared file system. Without the mount a search would find no
# database and the job would fail later with a less helpful message.
for var in AF2_DB_ROOT AF2_PARAMS_DIR; do
  dir="${!var:-}"
  if [[ -n "$dir" && ! -d "$dir" ]]; then
    say "$var=$dir is not a directory: is the file system mounted at /fsx on this instance (launch template)?"
    exit 3
  fi
done

for var in JAX_COMPILATION_CACHE_DIR AF2_DATA_DIR; do
  dir="${!var:-}"
  if [[ -n "$dir" ]] && ! mkdir -p "$dir" 2>/dev/null; then
    say "$var=$dir cannot be created; continuing without it"
    unset "$var"
  fi
done

say "batch job ${AWS_BATCH_JOB_ID:-(not in Batch)} attempt ${AWS_BATCH_JOB_ATTEMPT:-1}: $*"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    | sed 's/^/af2jobs-entrypoint: gpu /' >&2 || true
fi

# The predict stage runs under the GPU metrics agent (monitoring/gpumon.py): it samples the GPUs into CloudWatch,
# forwards TerminateJob's signal to the stage and exits with the stage's own status. Its summary goes beside the
# job's outputs in S3, where the state machine's MarkSucceeded step reads it onto the job record.
gpumon="${AF2_GPUMON:-/opt/af2jobs/gpumon.py}"
if [[ " $* " == *" af2jobs.awsrun.batch predict "* && -f "$gpumon" ]]; then
  job_id=""
  args=("$@")
  for ((i = 0; i < ${#args[@]} - 1; i++)); do
    [[ "${args[i]}" == "--job-id" ]] && job_id="${args[i + 1]}"
  done
  upload=()
  if [[ -n "${AF2_BUCKET:-}" && -n "$job_id" ]]; then
    upload=(--s3-uri "s3://${AF2_BUCKET}/jobs/${job_id}/output/gpu_summary.json")
  fi
  exec python3 "$gpumon" --job-id "${job_id:-unknown}" --interval "${AF2_GPUMON_INTERVAL:-10}" "${upload[@]}" -- "$@"
fi

exec "$@"
