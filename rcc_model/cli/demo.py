"""`rcc demo`: compress a generated document several windows long and answer a question about it."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from rcc_model.cli.checks import non_negative_int, positive_int
    from rcc_model.cli.options import add_model_options

    p = sub.add_parser("demo", help="compress a sample document and answer a question about it",
                       description="Compress a generated document several windows long, then answer a "
                       "question about a fact hidden in its middle.")
    p.add_argument("--passkey", type=non_negative_int, default=68231, help="the number hidden in the sample document "
                   "(default: %(default)s)")
    p.add_argument("--rate", type=positive_int,
                   help="compression rate, one the model was trained at (default: its own)")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    import time

    from rcc_model.cli.options import load_model_for
    from rcc_model.generation import GenerationInfo
    from rcc_model.samples import passkey_document

    start = time.perf_counter()
    model = load_model_for(args, args.rate)
    print(f"model: {args.model} (base {model.config.base}, rate {model.config.check_rate(args.rate)}, "
          f"window {model.config.window}) loaded in {time.perf_counter() - start:.1f}s")
    status = model.config.extra.get("status")
    if status:
        print(f"note: {status}")
    document, question = passkey_document(args.passkey)
    start = time.perf_counter()
    memory = model.compress(document, rate=args.rate)
    seconds = time.perf_counter() - start
    print(f"compressed {memory.token_count} tokens into {memory.num_slots} slots in {seconds:.1f}s "
          f"({memory.token_count / seconds:.0f} tokens/s, {memory.nbytes / 1e6:.1f} MB of memory)")
    print(f"question: {question}")
    info = GenerationInfo()  # read as `model.ask` reads it: the best windows as text, their neighbours as slots
    answer = "".join(model.stream(memory, [{"role": "user", "content": question}], max_new_tokens=32, info=info))
    reading = info.reading
    if reading is not None and reading.selected:
        print(f"read {reading.windows_read} of {reading.windows_held} windows ({reading.windows_expanded} as text), "
              f"those that best match the question (the model reads up to {model.config.read_slots} slots well: "
              "MODEL_CARD.md)")
    print(f"answer from memory: {answer}")
    print(f"expected: {args.passkey}")
    return 0
