"""Decoding speed from memory against the base model's own `generate`, measured in the same run.

    python benchmarks/decoding_speed/decoding_speed.py                      # writes decoding_speed.{md,json}
    python benchmarks/decoding_speed/decoding_speed.py --new-tokens 256 --repeats 5 --threads 2

Methods, each timed in turn within every repetition (so that load from other processes hits all alike), medians
reported:
- base `generate`: the untouched base model (transformers `generate`, KV cache, greedy) on a prompt of as many
  tokens as the RCC decoder reads (the memory's slots + the question), so that both attend to as many positions
  (the "x base" columns: the per-token cost alone);
- base `generate`, whole context: the same on the context itself + the question, what the base model must read
  to answer the same question without RCC (the "x context" column; the memory was compressed beforehand, once);
- RCC `generate_ids`: greedy tokens from the memory and the same question, as `generate`, `ask` and `stream`
  decode them (`StaticDecoder` steps);
- RCC, stock step: the same, each step through the stock decoder `forward` (the path before `StaticDecoder`);
- greedy `reconstruct`: two windows regenerated from their slots in one batch (two rows: tokens/s counts both),
  with `StaticDecoder` steps and with the stock step.
Every method but `reconstruct` writes exactly `--new-tokens` tokens (EOS suppressed). tokens/s is new tokens over
the whole call, prefill included; "decoding" tokens/s leaves the prefill out (a call for one token, timed alike,
subtracted).
The run also checks that the StaticDecoder path writes the stock path's greedy tokens and reconstruction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).parent
QUESTION = "Who keeps the lighthouse?"


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--context-tokens", type=int, default=1000, help="tokens compressed into the memory")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=HERE / "decoding_speed", help="report path, without suffix")
    args = parser.parse_args()

    import torch

    from rcc_model import RCCModel, bases
    from rcc_model.prompts import prompt_ids
    from rcc_model.samples import chronicle

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model)
    base = bases.load_causal_lm(bases.resolve_base(model.config.base), model.decoder.dtype).eval()
    ids = model.encode_text(chronicle(sentences=args.context_tokens // 8 + 20, seed=1,
                                      facts=["The lighthouse is kept by Ines Okafor."]))
    memory = model.compress(ids[:args.context_tokens])
    windows = model.compress(ids[:2 * model.config.window])
    question = prompt_ids(model.tokenizer, [{"role": "user", "content": QUESTION}])
    base_prompt = torch.tensor([ids[:memory.num_slots] + question])  # as many positions as slots + question
    context_prompt = torch.tensor([ids[:args.context_tokens] + question])  # what the base reads without RCC
    n = args.new_tokens

    def base_generate(tokens: int, prompt: torch.Tensor = base_prompt):
        return lambda: base.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    def rcc_generate(tokens: int):
        return lambda: model.generate_ids(memory, question, max_new_tokens=tokens, min_new_tokens=tokens)

    def stock(call):
        def run():
            with mock.patch("rcc_model.decoding.StaticCache.of", return_value=None):
                return call()
        return run

    def reconstruct():
        return model.reconstruct(windows, num_beams=1, verify=0, anchored=False)

    methods = {
        "base `generate`": (base_generate(n), base_generate(1), n),
        "base `generate`, whole context": (base_generate(n, context_prompt), base_generate(1, context_prompt), n),
        "RCC `generate_ids` from memory": (rcc_generate(n), rcc_generate(1), n),
        "RCC from memory, stock step": (stock(rcc_generate(n)), stock(rcc_generate(1)), n),
        "greedy `reconstruct`, 2 windows in one batch": (reconstruct, None, windows.token_count),
        "greedy `reconstruct`, stock step": (stock(reconstruct), None, windows.token_count),
    }
    outputs = {}
    for name, (full, one, _) in methods.items():  # warm-up (first calls allocate and pack weights), outputs kept
        outputs[name] = full()
        if one:
            one()
    names = list(methods)
    same_tokens = outputs[names[2]] == outputs[names[3]] and outputs[names[4]] == outputs[names[5]]
    times: dict[str, list[float]] = {name: [] for name in methods}
    firsts: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for name, (full, one, _) in methods.items():
            times[name].append(seconds(full))
            if one:
                firsts[name].append(seconds(one))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

    rows = []
    for name, (_, _, tokens) in methods.items():
        total = statistics.median(times[name])
        first = statistics.median(firsts[name]) if firsts[name] else None
        rows.append({"method": name, "new_tokens": tokens, "seconds": total, "tokens_per_s": tokens / total,
                     "first_token_s": first,
                     "decoding_tokens_per_s": (tokens - 1) / (total - first) if first is not None else None,
                     "all_seconds": times[name]})
    base_rate, context_rate = rows[0], rows[1]
    for row in rows:
        row["vs_base"] = row["tokens_per_s"] / base_rate["tokens_per_s"]
        row["vs_context"] = row["tokens_per_s"] / context_rate["tokens_per_s"]
        if row["decoding_tokens_per_s"] is not None:
            row["decoding_vs_base"] = row["decoding_tokens_per_s"] / base_rate["decoding_tokens_per_s"]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else []
    command = (f"python benchmarks/decoding_speed/decoding_speed.py --context-tokens {args.context_tokens} "
               f"--new-tokens {n} --repeats {args.repeats}" + (f" --threads {args.threads}" if args.threads else ""))
    if args.out != HERE / "decoding_speed":
        command += f" --out {args.out}"
    body = [f"Memory: {args.context_tokens} tokens, {memory.num_slots} slots (r = {memory.rate}); question "
            f"{len(question)} tokens; base prompt {base_prompt.shape[1]} tokens, whole context "
            f"{context_prompt.shape[1]}. Weights {model.decoder.dtype}. "
            f"Median of {args.repeats} interleaved repetitions. Load average at the end: {' '.join(load)}. "
            f"The StaticDecoder path writes the stock path's greedy tokens and reconstruction: "
            f"{'yes' if same_tokens else 'NO'}.", "",
            "| method | new tokens | s per call | tokens/s | x base | x context | first token s | decoding tokens/s "
            "| x base |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        decoding = (f"{r['first_token_s']:.2f} | {r['decoding_tokens_per_s']:.1f} | {r['decoding_vs_base']:.2f}"
                    if r["first_token_s"] is not None else "– | – | –")
        body.append(f"| {r['method']} | {r['new_tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} | "
                    f"{r['vs_base']:.2f} | {r['vs_context']:.2f} | {decoding} |")
    write_report(args.out, "Decoding speed from memory vs the base model's `generate`", command, body,
                 {"rows": rows, "same_tokens": same_tokens, "load_average": load, "slots": memory.num_slots},
                 measured_on=machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
