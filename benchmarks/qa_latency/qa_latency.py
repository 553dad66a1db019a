"""Question answering over one long document: time to first token and peak memory, RCC vs the full text.

    python benchmarks/qa_latency/qa_latency.py                          # 1K .. 32K tokens; writes qa_latency.{md,json}
    python benchmarks/qa_latency/qa_latency.py --lengths 2000 8000

Three ways to answer a question about a document of L tokens, each in a fresh process (its own peak RSS):
- rcc, compress + answer: compress the document, then prefill memory + question and produce one token;
- rcc, stored memory: load the memory file written earlier, prefill, one token (compress once, ask many);
- full text: the same base model with the document in its prompt, where it fits its positions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _child import peak_rss_gib, report, run_child
from _report import machine, write_report

HERE = Path(__file__).parent
QUESTION = "Who keeps the lighthouse?"


def document(model, n: int) -> str:
    from rcc_model.samples import chronicle

    text = chronicle(sentences=n // 10 + 10, seed=1, facts=["The lighthouse is kept by Ines Okafor."])
    return model.tokenizer.decode(model.encode_text(text)[:n])


def first_token_seconds(model, memory, prompt) -> float:
    start = time.perf_counter()
    model.generate(memory, prompt, max_new_tokens=1)
    return time.perf_counter() - start


def measure(kind: str, n: int, memory_file: Path, model_name: str) -> dict:
    import torch

    from rcc_model import CompressedMemory, RCCModel
    from rcc_model.checkpoint import describe
    from rcc_model.prompts import text_then_question

    torch.set_grad_enabled(False)
    full_text = kind == "full text"
    model = RCCModel.from_base(describe(model_name)["base"]) if full_text else RCCModel.from_pretrained(model_name)
    text = document(model, n)
    chat = [{"role": "user", "content": QUESTION}]
    first_token_seconds(model, model.compress(text[:2000]), chat)  # warm-up
    loaded = peak_rss_gib()
    if kind == "rcc, compress + answer":
        start = time.perf_counter()
        memory = model.compress(text, progress=False)
        memory.save(memory_file)
        seconds = time.perf_counter() - start + first_token_seconds(model, memory, chat)
    elif kind == "rcc, stored memory":
        start = time.perf_counter()
        memory = CompressedMemory.load(memory_file)
        seconds = time.perf_counter() - start + first_token_seconds(model, memory, chat)
    elif full_text:
        prompt = [{"role": "user", "content": text_then_question(text, QUESTION)}]
        seconds = first_token_seconds(model, model.empty_memory(), prompt)
    else:
        raise ValueError(f"unknown method {kind!r}")
    return {"method": kind, "tokens": n, "first_token_s": seconds, "peak_rss_gib": peak_rss_gib(),
            "rss_after_load_gib": loaded, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 2000, 4000, 7500, 16000, 32000])
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=HERE / "qa_latency", help="report path, without suffix")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(measure(args.child, args.n, args.memory_file, args.model))
        return

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.lengths:
            memory_file = Path(scratch) / f"{n}.safetensors"
            kinds = ["rcc, compress + answer", "rcc, stored memory"] + (["full text"] if n <= 7500 else [])
            for kind in kinds:
                rows.append(run_child(__file__, "--child", kind, "--n", str(n), "--memory-file", str(memory_file),
                                      "--model", args.model))
                print(rows[-1], flush=True)

    command = (f"python benchmarks/qa_latency/qa_latency.py --lengths {' '.join(map(str, args.lengths))} "
               f"--model {args.model}")
    if args.out != HERE / "qa_latency":
        command += f" --out {args.out}"
    write(rows, command, args.out)


def write(rows: list[dict], command: str, out: Path) -> None:
    body = ["The full text is only run where it fits the base model's 8,192 positions.", "",
            "| document tokens | method | time to first token s | peak RSS GiB | peak - after load GiB |",
            "|---:|---|---:|---:|---:|"]
    body += [f"| {r['tokens']:,} | {r['method']} | {r['first_token_s']:.2f} | {r['peak_rss_gib']:.2f} | "
             f"{r['peak_rss_gib'] - r['rss_after_load_gib']:.2f} |" for r in rows]
    write_report(out, "Question answering over a long document: time to first token and peak memory",
                 command, body, {"rows": rows}, measured_on=machine(rows[0]["threads"]))


if __name__ == "__main__":
    main()
