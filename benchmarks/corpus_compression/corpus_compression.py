"""Corpus compression throughput with 1 and N processes: `rcc compress CORPUS -o STORE`, and the same under
`accelerate launch --multi_gpu --num_processes N` (on a CPU the processes talk over gloo, one thread each).

The corpus is real text every Debian machine carries: the licence texts in /usr/share/common-licenses and the
packages' copyright files in /usr/share/doc, distinct texts only, in path order, up to --chars characters. For
each process count it reports wall-clock tokens/s (start-up and model loading included), each process's own
compression rate and peak RSS, and the store's bytes per token; it checks that N processes wrote the store one
process wrote (the same manifest entries, the same shard bytes).

    python benchmarks/corpus_compression/corpus_compression.py --processes 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).resolve().parent
SOURCES = ("/usr/share/common-licenses/*", "/usr/share/doc/*/copyright")


def build_corpus(path: Path, chars: int) -> dict:
    """A JSONL corpus of distinct licence and copyright texts, up to `chars` characters; what it holds."""
    import glob

    seen, rows, total = set(), [], 0
    for pattern in SOURCES:
        for name in sorted(glob.glob(pattern)):
            try:
                text = Path(name).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            if not text.strip() or digest in seen or total + len(text) > chars:
                continue
            seen.add(digest)
            rows.append({"id": name, "text": text})
            total += len(text)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"documents": len(rows), "characters": total}


def run(corpus: Path, store: Path, processes: int, args: argparse.Namespace) -> dict:
    launch = [] if processes == 1 else [
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command = [sys.executable, *launch, "-m", "rcc_model.cli", "compress", str(corpus), "-o", str(store),
               "--model", args.model, "--batch-size", str(args.batch_size)]
    threads = max(1, args.threads // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    shares = [{"process": int(p), "documents": int(d), "tokens": int(t), "seconds": float(s),
               "tokens_per_s": float(r), "peak_rss_mb": float(m)}
              for p, d, t, s, r, m in re.findall(r"process (\d+)/\d+: (\d+) documents, (\d+) tokens in ([\d.]+) s "
                                                 r"\(([\d.]+) tokens/s\), peak RSS ([\d.]+) MB", done.stdout)]
    info = json.loads(subprocess.run([sys.executable, "-m", "rcc_model.cli", "info", str(store), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    tokens = sum(share["tokens"] for share in shares)
    return {"processes": processes, "threads_per_process": threads, "wall_s": round(wall, 1),
            "tokens": tokens, "tokens_per_s_wall": round(tokens / wall, 1),
            "tokens_per_s_compressing": round(tokens / max(share["seconds"] for share in shares), 1),
            "peak_rss_mb": [share["peak_rss_mb"] for share in sorted(shares, key=lambda s: s["process"])],
            "shares": shares, "store_bytes": info["store_bytes"], "bytes_per_token": info["bytes_per_token"],
            "shards": info["shards"], "documents": info["documents"], "storage": info["storage"]}


def same_store(a: Path, b: Path) -> bool:
    manifests = [json.loads((s / "manifest.json").read_text()) for s in (a, b)]
    shards = [sorted(p.name for p in (s / "shards").glob("shard-*")) for s in (a, b)]
    return manifests[0] == manifests[1] and shards[0] == shards[1] and all(
        (a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in shards[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to run, in turn")
    parser.add_argument("--chars", type=int, default=300_000, help="corpus size in characters (default: 300000)")
    parser.add_argument("--model", default="default", help="packaged model name or checkpoint folder")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per encoder batch")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads in all, split evenly between the processes (default: every core)")
    parser.add_argument("--out", type=Path, default=HERE / "corpus_compression", help="result stem (.md, .json)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        held = build_corpus(corpus, args.chars)
        results = [run(corpus, Path(tmp) / f"p{n}.rccstore", n, args) for n in args.processes]
        first = Path(tmp) / f"p{args.processes[0]}.rccstore"
        for result in results[1:]:
            result["same_store_as_first"] = same_store(first, Path(tmp) / f"p{result['processes']}.rccstore")

    rows = ["| processes | threads each | wall s | tokens/s, wall | tokens/s, compressing | peak RSS per process, MB "
            "| store bytes per token | same store as 1 process |", "|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in results:
        same = {True: "yes", False: "**no**", None: "–"}[r.get("same_store_as_first")]
        peaks = ", ".join(f"{m:,.0f}" for m in r["peak_rss_mb"])
        rows.append(f"| {r['processes']} | {r['threads_per_process']} | {r['wall_s']} | "
                    f"{r['tokens_per_s_wall']:,.0f} | {r['tokens_per_s_compressing']:,.0f} | {peaks} | "
                    f"{r['bytes_per_token']:,.0f} | {same} |")
    body = [f"Corpus: {held['documents']} distinct licence and copyright texts of this machine "
            f"({held['characters']:,} characters, {results[0]['tokens']:,} tokens), model `{args.model}`, "
            f"{results[0]['storage']} storage, {results[0]['shards']} shard(s).", "", *rows, "",
            "Wall time includes interpreter start-up and model loading in every process; \"compressing\" is the "
            "tokens over the slowest process's compression time."]
    command = "python benchmarks/corpus_compression/corpus_compression.py " + " ".join(sys.argv[1:])
    write_report(args.out, "Corpus compression: 1 process and N processes", command.strip(), body,
                 {"corpus": held, "results": results}, measured_on=machine(args.threads))


if __name__ == "__main__":
    main()
