"""Compression throughput and peak memory vs input length, on the SmolLM2 base, against a naive baseline.

Each measurement runs in a fresh subprocess so that its peak RSS is its own. Writes a Markdown table and a
JSON file next to this script.

    python benchmarks/compression_throughput/compression_throughput.py   # 10K .. 1M tokens (about 20 min on 2 cores)
    python benchmarks/compression_throughput/compression_throughput.py --lengths 10000 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _child import peak_rss_gib, report, run_child
from _report import machine, write_report

HERE = Path(__file__).parent


def tokens_of_length(model, n: int) -> list[int]:
    from rcc_model.samples import passkey_document

    ids = model.encode_text(passkey_document(4242, sentences=400)[0])
    return (ids * (n // len(ids) + 1))[:n]


def measure_rcc(n: int, batch_size: int) -> dict:
    import torch

    from rcc_model import RCCModel

    model = RCCModel.from_pretrained("default", device="cpu")
    ids = tokens_of_length(model, n)
    model.compress(ids[:2048], batch_size=batch_size, progress=False)  # warm-up
    before = peak_rss_gib()
    start = time.perf_counter()
    memory = model.compress(ids, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    dtype = str(model.encoder.dtype).removeprefix("torch.")  # "auto": float32 on a CPU without bf16 instructions
    return {"method": f"rcc ({dtype}, batch {batch_size}, slot states only)", "dtype": dtype, "tokens": n,
            "seconds": seconds, "tokens_per_s": n / seconds, "peak_rss_gib": peak, "rss_after_load_gib": before,
            "memory_gib": memory.nbytes / 2**30, "threads": torch.get_num_threads()}


def measure_naive(n: int) -> dict:
    """What a straightforward loop does: fp32, one window at a time, full causal-LM forward (with LM head
    logits over every position), all hidden states, then slicing the slots."""
    import torch

    from rcc_model import RCCModel

    model = RCCModel.from_pretrained("default", device="cpu", dtype="float32")
    ids = tokens_of_length(model, n)
    window, rate = model.config.window, model.config.rate
    before = peak_rss_gib()
    start = time.perf_counter()
    slots = []
    with torch.no_grad():
        for i in range(0, n, window):
            out = model.encoder(input_ids=torch.tensor([ids[i:i + window]]), output_hidden_states=True)
            slots.append(torch.stack([h[0, rate - 1::rate] for h in out.hidden_states], 1))
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    memory = torch.cat(slots)
    return {"method": "naive (float32, batch 1, LM head on)", "dtype": "float32", "tokens": n, "seconds": seconds,
            "tokens_per_s": n / seconds, "peak_rss_gib": peak, "rss_after_load_gib": before,
            "memory_gib": memory.numel() * memory.element_size() / 2**30, "threads": torch.get_num_threads()}


def roofline() -> dict:
    """Measured bf16 and fp32 matmul FLOP/s, and the encoder's tokens/s bound: FLOP/s / (2 x params)."""
    import torch

    from rcc_model import bases

    path = bases.resolve_base("smollm2-135m-instruct")
    model = bases.load_causal_lm(path, torch.float32)
    params = sum(p.numel() for p in model.base_model.parameters()) - model.get_input_embeddings().weight.numel()
    result = {"encoder_params_without_embeddings": params}
    for dtype in (torch.float32, torch.bfloat16):
        size = 2048 if dtype == torch.float32 or bases.cpu_has_fast_bf16() else 512  # emulated: ~1 GFLOP/s
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        start, reps = time.perf_counter(), 20
        for _ in range(reps):
            a @ b
        flops = 2 * size**3 * reps / (time.perf_counter() - start)
        name = str(dtype).removeprefix("torch.")
        result[f"{name}_matmul_gflops"] = flops / 1e9
        result[f"{name}_roofline_tokens_per_s"] = flops / (2 * params)
    return result


def child(args: argparse.Namespace) -> None:
    if args.child == "rcc":
        report(measure_rcc(args.n, args.batch_size))
    elif args.child == "naive":
        report(measure_naive(args.n))
    else:
        report(roofline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--naive-length", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "compression_throughput", help="report path, no suffix")
    parser.add_argument("--child", choices=["rcc", "naive", "roofline"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    bound = run_child(__file__, "--child", "roofline")
    print(json.dumps(bound, indent=2))
    rows = [run_child(__file__, "--child", "naive", "--n", str(args.naive_length))]
    print(rows[-1])
    for n in args.lengths:
        rows.append(run_child(__file__, "--child", "rcc", "--n", str(n), "--batch-size", str(args.batch_size)))
        print(rows[-1])

    command = ("python benchmarks/compression_throughput/compression_throughput.py "
               f"--lengths {' '.join(map(str, args.lengths))}")
    if args.out != HERE / "compression_throughput":
        command += f" --out {args.out}"
    write(bound, rows, command, args.out)


def write(bound: dict, rows: list[dict], command: str, out: Path) -> None:
    body = [
        f"Roofline: bf16 matmul {bound['bfloat16_matmul_gflops']:.0f} GFLOP/s, fp32 "
        f"{bound['float32_matmul_gflops']:.0f} GFLOP/s; {bound['encoder_params_without_embeddings'] / 1e6:.1f}M "
        f"non-embedding encoder parameters -> at most {bound['bfloat16_roofline_tokens_per_s']:.0f} tokens/s "
        f"in bf16 ({bound['float32_roofline_tokens_per_s']:.0f} in fp32), ignoring attention.", "",
        "| method | tokens | seconds | tokens/s | % of its dtype's roofline | peak RSS GiB | RSS after load GiB | "
        "memory output GiB | peak - load - output GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        working = r["peak_rss_gib"] - r["rss_after_load_gib"] - r["memory_gib"]
        share = r["tokens_per_s"] / bound[f"{r['dtype']}_roofline_tokens_per_s"]
        body.append(
            f"| {r['method']} | {r['tokens']:,} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | "
            f"{100 * share:.0f}% | {r['peak_rss_gib']:.2f} | "
            f"{r['rss_after_load_gib']:.2f} | {r['memory_gib']:.3f} | {working:.2f} |")
    body += ["", "The memory output (slot states, bfloat16) grows with the input by design: "
             "(L+1) x H x 2 bytes per r tokens. The working memory beyond it stays bounded by one batch."]
    write_report(out,
                 "Compression throughput and peak memory (SmolLM2-135M base, r = 4, W = 256)", command, body,
                 {"roofline": bound, "rows": rows}, measured_on=machine(rows[0]["threads"]))


if __name__ == "__main__":
    main()
