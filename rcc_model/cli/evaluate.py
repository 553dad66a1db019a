"""`rcc eval PROTOCOL`: reconstruction, passkey, needle, qa; writes JSON + Markdown (+ PNG for grids)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

PROTOCOLS = ("reconstruction", "passkey", "needle", "qa")


def add_parser(sub) -> None:
    from rcc_model.cli.checks import non_negative_int, positive_int, share
    from rcc_model.cli.options import add_model_options, add_rank_option, add_search_options

    p = sub.add_parser("eval", help="evaluate a model (reconstruction, passkey, needle, qa)",
                       description="Evaluate an RCC model on held-out data and write PROTOCOL.json, "
                       "PROTOCOL.md (and PROTOCOL.png for length x depth grids) into --out.")
    p.add_argument("protocol", choices=PROTOCOLS, help="what to measure: reconstruction (BLEU of regenerated "
                   "text), passkey, needle (a planted fact at lengths x depths), qa (answers to questions)")
    p.add_argument("--data", type=Path, help="folder from `rcc data build` (held-out split)")
    p.add_argument("--out", type=Path, default=Path("eval"), help="output folder (default: %(default)s)")
    p.add_argument("--windows", type=positive_int, default=32, help="reconstruction: held-out windows")
    p.add_argument("--rate", type=positive_int,
                   help="evaluate the model at this rate, one it was trained at (default: its "
                   "own); a model with weights of their own for that rate loads them")
    p.add_argument("--rates", type=positive_int, nargs="+", help="reconstruction: read the model at each of these "
                   "compression rates (BLEU vs rate; default: the rate it was trained at)")
    p.add_argument("--stop-at-eos", action="store_true", help="reconstruction: end a window's text at the "
                   "first EOS instead of decoding it to its known length")
    p.add_argument("--no-repeat-ngram", type=non_negative_int, default=0, metavar="N",
                   help="reconstruction: never repeat an "
                   "N-gram of tokens a window's text already holds (default: 0, greedy alone)")
    add_search_options(p, "reconstruction, --from-reconstruction: ")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[1000, 4000], help="passkey/needle: tokens")
    p.add_argument("--depths", type=share, nargs="+", default=[0.1, 0.5, 0.9], help="passkey/needle: depth")
    p.add_argument("--trials", type=positive_int, default=2, help="passkey/needle: trials per cell")
    p.add_argument("--read-slots", type=positive_int,
                   help="passkey/needle/qa: read only this many slots of each memory, "
                   "the windows that best match the question (BM25), as the integrations do (default: all)")
    p.add_argument("--read-alignments", type=positive_int,
                   help="passkey/needle/qa with --read-slots: decode the windows "
                   "read at this many slot alignments together (default: the model's read_alignments)")
    p.add_argument("--from-reconstruction", action="store_true", help="passkey/needle/qa: answer from the memory's "
                   "reconstructed text, read by the decoder without memory (RCCModel.ask_from_reconstruction; "
                   "with --read-slots, the reconstructed windows that best match the question)")
    add_rank_option(p)
    p.add_argument("--abstention-margin", type=_margin, default=argparse.SUPPRESS, help="answer with the model's "
                   "abstention exactly where it beats its best other answer by more than this many nats (below 0: "
                   "also where it trails an answer by less), or 'none' for plain greedy decoding (default: the "
                   "model's abstention_margin)")
    p.add_argument("--needle-sentence", help="needle: the hidden sentence, with {code} in it (default: the "
                   "protocol's own)")
    p.add_argument("--needle-question", help="needle: the question asked (default: the protocol's own)")
    p.add_argument("--pwc", type=Path, help="qa, reconstruction: a PwC jsonl file (input, prompt, answer) "
                   "instead of --data")
    p.add_argument("--limit", type=positive_int, default=50, help="qa: at most this many examples")
    p.add_argument("--no-baseline", action="store_true", help="qa, passkey, needle: skip the baseline, the same base "
                   "model with the full text in its window (where it fits)")
    p.add_argument("--compressed-question", action="store_true", help="qa: compress each question after its "
                   "context and let the decoder recall it before answering (the paper's instruction "
                   "reconstruction); the baseline still reads the question in plain text")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from rcc_model.checkpoint import own_rates
    from rcc_model.cli.options import load_model, reconstruction_options, search_options
    from rcc_model.evaluation import protocols

    _check(args)
    reconstructed = reconstruction_options(args)
    own = own_rates(args.model)
    if args.rate is not None and args.rate not in own:
        raise ValueError(f"{args.model} was trained at rate {', '.join(map(str, own))}, not {args.rate} (`--rates` "
                         "reads reconstruction at rates a model was not trained at)")
    model = load_model(args, rate=args.rate)  # a rate of its own, checked above: its weights for that rate
    if args.read_alignments is not None:
        model.config = dataclasses.replace(model.config, read_alignments=args.read_alignments)  # checked
    if hasattr(args, "abstention_margin"):  # given: else the model's own
        model.config = dataclasses.replace(model.config, abstention_margin=args.abstention_margin)
    if args.protocol == "reconstruction" and args.rates:
        tokens = _reconstruction_tokens(args, model)
        trained = model.config.trained_rates
        by_rate = [  # another rate needs its own copy (its own weights, if any): one extra model alive at a time
            protocols.reconstruction(model if r in trained else load_model(args, rate=r), tokens,
                                     windows=args.windows, stop_at_eos=args.stop_at_eos,
                                     rate=r if r in trained else None, no_repeat_ngram_size=args.no_repeat_ngram,
                                     progress=True, **search_options(args))
            for r in args.rates]
        result = {"trained_rates": own_rates(args.model), "length": by_rate[0]["length"], "by_rate": by_rate}
    elif args.protocol == "reconstruction":
        result = protocols.reconstruction(model, _reconstruction_tokens(args, model), windows=args.windows,
                                          stop_at_eos=args.stop_at_eos, no_repeat_ngram_size=args.no_repeat_ngram,
                                          progress=True, **search_options(args))
    elif args.protocol == "passkey":
        result = protocols.passkey(model, args.lengths, args.depths, trials=args.trials, read_slots=args.read_slots,
                                   reconstructed=reconstructed, base=_baseline(args, model), progress=True)
    elif args.protocol == "needle":
        from rcc_model.data.build import load_tokens

        phrasing = {"sentence": args.needle_sentence or protocols.NEEDLE_SENTENCE,
                    "question": args.needle_question or protocols.NEEDLE_QUESTION}
        result = protocols.needle(model, load_tokens(_need(args.data), "heldout"), args.lengths, args.depths,
                                  trials=args.trials, read_slots=args.read_slots, reconstructed=reconstructed,
                                  base=_baseline(args, model), progress=True, **phrasing)
    else:
        result = protocols.question_answering(model, _qa_examples(args), base=_baseline(args, model),
                                              read_slots=args.read_slots,
                                              compressed_question=args.compressed_question,
                                              reconstructed=reconstructed, progress=True)
    result["model"] = args.model
    result.setdefault("rate", model.config.rate)
    result["abstention_margin"] = model.config.abstention_margin
    result["dtype"] = str(model.decoder.dtype).removeprefix("torch.")  # bf16 and float32 read a few answers apart
    write(args.out, args.protocol, result)
    print((args.out / f"{args.protocol}.md").read_text())
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse, before the model loads, options the protocol does not use and inputs or outputs that are not
    there to read or write."""
    from rcc_model.cli.checks import readable_file, writable_folder
    from rcc_model.cli.options import refuse_unused_search

    if args.from_reconstruction and args.protocol == "reconstruction":
        raise ValueError("--from-reconstruction answers questions (passkey, needle, qa); reconstruction is measured "
                         "by the reconstruction protocol itself")
    if args.protocol != "reconstruction" and not args.from_reconstruction:
        refuse_unused_search(args, f"{args.protocol} decodes them only with --from-reconstruction")
    if args.pwc is not None:
        if args.protocol not in ("qa", "reconstruction"):
            raise ValueError(f"--pwc gives qa or reconstruction rows; {args.protocol} does not read it")
        readable_file(args.pwc, "PwC jsonl file")
    elif args.protocol != "passkey":
        _need(args.data)
    writable_folder(args.out)


def _margin(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _need(data: Path | None) -> Path:
    if data is None:
        raise ValueError("this protocol needs --data (a folder from `rcc data build`)")
    if not data.is_dir():
        raise ValueError(f"--data {data} is not a folder: give the folder `rcc data build --out` wrote")
    return data


def _pwc_rows(path: Path) -> list[dict]:
    """Rows of a PwC jsonl file: {"input", "prompt", "answer"}."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _reconstruction_tokens(args, model):
    """Held-out tokens, or the PwC inputs (`--pwc`) tokenized and joined: text no training run has seen."""
    import numpy as np

    from rcc_model.data.build import load_tokens

    if args.pwc is None:
        return load_tokens(_need(args.data), "heldout")
    return np.array([t for r in _pwc_rows(args.pwc) for t in model.encode_text(r["input"] + "\n\n")], dtype=np.uint32)


def _qa_examples(args):
    from rcc_model.data.build import load_qa
    from rcc_model.data.qa import QAExample

    if args.pwc:
        examples = [QAExample(r["input"], r["prompt"], r["answer"], "pwc") for r in _pwc_rows(args.pwc)]
    else:
        examples = load_qa(_need(args.data), "heldout")
    return examples[: args.limit]


def _baseline(args: argparse.Namespace, model):
    """The base model the memory's answers are compared with (it reads the full text), or None with
    `--no-baseline`."""
    if args.no_baseline:
        return None
    from rcc_model import bases

    path = bases.resolve_base(model.config.base)
    return bases.load_causal_lm(path, model.decoder.dtype).to(model.device)


def write(out: Path, name: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    lines = [f"# {name}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
    if "cells" in result:
        lengths = sorted({c["length"] for c in result["cells"]})
        depths = sorted({c["depth"] for c in result["cells"]})
        table = {(c["length"], c["depth"]): c["accuracy"] for c in result["cells"]}

        def grid(key: str) -> list[str]:  # one cell's `key` per length x depth; "–" where it is None
            values = {(c["length"], c["depth"]): c[key] for c in result["cells"]}
            return (["| length \\ depth | " + " | ".join(f"{d:.0%}" for d in depths) + " |",
                     "|---|" + "---|" * len(depths)]
                    + [f"| {n} | " + " | ".join("–" if values[n, d] is None else f"{values[n, d]:.0%}"
                                                for d in depths) + " |" for n in lengths])

        lines += ["", *grid("accuracy")]
        if "full_text_accuracy" in result:
            lines += ["", "The same base model with the full text in its window (– where it does not fit):", "",
                      *grid("full_text_accuracy")]
        _plot_grid(out / f"{name}.png", name, lengths, depths, table)
    if "by_rate" in result:
        lines += ["", "| rate | BLEU-4 (0-1) | sacreBLEU | exact match | token accuracy | TF loss | "
                  "TF loss, other memory |", "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['rate']} | {r['bleu4']:.3f} | {r['sacrebleu']:.1f} | {r['exact_match']:.3f} | "
                  f"{r['token_accuracy']:.3f} | {r['teacher_forced_loss']:.3f} | "
                  f"{r['loss_with_another_windows_memory']:.3f} |" for r in result["by_rate"]]
        _plot_by_rate(out / f"{name}.png", result["by_rate"], result["trained_rates"])
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def _pyplot():
    """matplotlib's pyplot on a file backend, or None where matplotlib is not installed (plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    return plt


def _plot_by_rate(path: Path, rows: list[dict], trained_rates: list[int]) -> None:
    plt = _pyplot()
    if plt is None:
        return
    rates = [r["rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rates, [r["bleu4"] for r in rows], "o-", label="corpus BLEU-4")
    ax.plot(rates, [r["token_accuracy"] for r in rows], "s--", label="token accuracy")
    for i, rate in enumerate(trained_rates):
        ax.axvline(rate, color="grey", lw=0.8, ls=":",
                   label=f"trained at r = {', '.join(map(str, trained_rates))}" if i == 0 else None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [str(r) for r in rates])
    ax.set_ylim(0, 1)
    ax.set_xlabel("compression rate r")
    ax.set_title("reconstruction vs compression rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_grid(path: Path, title: str, lengths, depths, table) -> None:
    plt = _pyplot()
    if plt is None:
        return
    grid = [[table[n, d] for d in depths] for n in lengths]
    fig, ax = plt.subplots(figsize=(1.2 * len(depths) + 2, 0.6 * len(lengths) + 1.5))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_xlabel("depth")
    ax.set_ylabel("context tokens")
    ax.set_title(f"{title} accuracy")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
