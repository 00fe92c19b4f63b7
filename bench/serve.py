"""`af2 serve` on a GPU machine, end to end: the server keeps its own JAX off the GPU and predicts in its slot's
process, which stays warm across jobs; a record estimated not to fit the GPU's memory fails before its MSA.

    python3 bench/serve.py --out DIR [--length 300] [--profile full]

Jobs bring their own MSA (the query alone), so no database is needed; untrained parameters. Prints and writes
DIR/serve.json: each job's wall time from submit to SUCCEEDED and its prediction phase, which processes hold GPU
memory (nvidia-smi) while a prediction runs, and the refusal of a record too long for the card.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AF2 = [sys.executable, "-m", "af2jobs.cli.main"]


def call(url: str, key: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def gpu_processes() -> list[dict]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout
    except FileNotFoundError:  # no GPU here
        return []
    return [{"pid": int(p), "mib": int(m)} for p, m in (line.split(", ") for line in out.strip().splitlines() if line)]


def job(url: str, key: str, name: str, length: int, seed: int, watch_gpu: bool = False) -> dict:
    rng = random.Random(seed)
    sequence = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(length))
    body = {"fasta": name, "sequence": f">{name}\n{sequence}\n", "msa": {name: f">{name}\n{sequence}\n"},
            "model_names": ["model_1", "model_3"], "strategy": "best", "models_to_relax": "none"}
    t0 = time.perf_counter()
    job_id = call(url, key, "POST", "/jobs", body)["id"]
    seen: list[list[dict]] = []
    while True:
        state = call(url, key, "GET", f"/jobs/{job_id}")
        if watch_gpu and state["state"] == "PREDICTING":
            seen.append(gpu_processes())
        if state["finished"]:
            break
        time.sleep(0.5)
    return {"name": name, "length": length, "state": state["state"], "error": state["error"],
            "wall_s": round(time.perf_counter() - t0, 1), "durations": state["durations"], "gpu_seen": seen[-3:]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--profile", choices=["full", "tiny"], default="full")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path("/tmp/af2-serve-bench")
    (data / "nodb").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AF2_DATA_DIR": str(data), "AF2_DB_ROOT": str(data / "nodb"), "AF2_MAX_LENGTH": "12000",
           "PYTHONUNBUFFERED": "1"}
    log = open(out / "serve.log", "w")
    server = subprocess.Popen([*AF2, "serve", "--port", "0", "--profile", args.profile], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=log)
    url = next(line for line in server.stdout if line.startswith("af2 serve: ")).split()[2]
    key = subprocess.run([*AF2, "keys", "create", "--owner", "bench"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    result: dict = {"server_pid": server.pid, "profile": args.profile}
    try:
        result["jobs"] = [job(url, key, "cold", args.length, 1, watch_gpu=True),
                          job(url, key, "warm", args.length, 2, watch_gpu=True)]
        result["too_long"] = job(url, key, "huge", 11000, 3)
        holders = {p["pid"] for seen in result["jobs"][0]["gpu_seen"] for p in seen}
        result["server_holds_gpu"] = server.pid in holders
        result["gpu_holders"] = sorted(holders)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    (out / "serve.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
