#!/usr/bin/env bash
# bench/msa.py on a machine that has none of its tools (no pyhmmer, MMseqs2 or HH-suite, no network): all of them
# come from .benchtools/ in the repository (an ignored folder: tools.tar.xz with mmseqs, hhblits, hhblits_omp,
# cstranslate, HH-suite's data files and the shared libraries a stock image may lack; the pyhmmer wheel; the seed
# sequences, seeds.fasta.gz). Results: $OUT/msa_bench.json (rewritten as it goes) and $OUT/msa_bench.log.
#
# MMseqs2's GPU build, where it is at build/mmgpu/mm/b/src/mmseqs (or MMSEQS_GPU names it), adds the GPU rows.
#
#   OUT=DIR bench/msa_device.sh --sizes 1000000 --hh-size 100000 --families 100 --batch 100 --cpus-list 16,8
#   OUT=DIR bench/msa_device.sh --sizes 3000000 --families 100 --batch 100 --jackhmmer-batch 10 --cpus-list 16 \
#       --tools jackhmmer,mmseqs2,mmseqs2_gpu,mmseqs2_gpuserver
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="${BENCHTOOLS:-$repo/.benchtools}"
out="${OUT:?set OUT to the folder that receives msa_bench.json}"
py="${PYTHON:-python3}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/msa-bench-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
tar -C "$scratch" -xJf "$tools/tools.tar.xz"
for lib in "$scratch"/lib/*; do  # a library the system has is the system's
    if ldconfig -p 2>/dev/null | grep -q "/$(basename "$lib")\$"; then rm "$lib"; fi
done
# A wheel is a zip; unpacked onto the path it imports as pip would have installed it.
$py -m zipfile -e "$(ls "${WHEELS:-$tools}"/pyhmmer-*.whl | head -1)" "$scratch/site"
export PATH="$scratch/bin:$PATH" LD_LIBRARY_PATH="$scratch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}" HHLIB="$scratch" PYTHONUNBUFFERED=1
mkdir -p "$out"
gpu="${MMSEQS_GPU:-$repo/build/mmgpu/mm/b/src/mmseqs}"
gpu_args=()
[ -x "$gpu" ] && gpu_args=(--mmseqs-gpu "$gpu")
$py "$repo/bench/msa.py" --seeds-fasta "$tools/seeds.fasta.gz" --work "$scratch" --out "$out" "${gpu_args[@]}" "$@" 2>&1 \
    | tee "$out/msa_bench.log"
