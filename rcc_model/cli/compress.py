"""`rcc compress FILE -o FILE.rccmem`, or a corpus (folder, glob, JSONL) into a memory store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli.checks import positive_float, positive_int
    from rcc_model.cli.options import add_model_options

    p = sub.add_parser(
        "compress", help="compress a text file into a memory file, or a corpus into a memory store",
        description="Compress a UTF-8 text file into an RCC memory file (safetensors), or a corpus (a folder, a "
        "glob such as 'docs/**/*.md', or a JSONL file of {\"id\", \"text\", \"metadata\"} rows) into a memory "
        "store: sharded safetensors files plus a manifest, read with rcc_model.MemoryStore. Compressing into a "
        "store again skips the documents it already holds with the same text, so a stopped run resumes. "
        "On several GPUs: accelerate launch --multi_gpu --num_processes N -m rcc_model.cli compress CORPUS -o STORE.")
    p.add_argument("file", help="text file ('-' for standard input), or a corpus: folder, glob or .jsonl file")
    p.add_argument("-o", "--output", type=Path, help="memory file (default: FILE.rccmem) or, for a corpus, store "
                   "folder (default: NAME.rccstore)")
    p.add_argument("--question", help="compress this question with the text (instruction reconstruction; one text "
                   "file only)")
    p.add_argument("--rate", type=positive_int, help="compression rate, one the model was trained at (default: its "
                   "own); a model with weights of their own for that rate loads them")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per encoder batch (default: 8)")
    p.add_argument("--storage", choices=["bfloat16", "float16", "float32", "int8"],
                   help="dtype of the stored states (default: the model's memory dtype)")
    p.add_argument("--keep-text", action=argparse.BooleanOptionalAction, default=True, help="store each window's "
                   "text in the file too (the default), so that `rcc ask` ranks the windows against a question and "
                   "reads the best as text; --no-keep-text stores slots only (a store always keeps its documents' "
                   "text)")
    p.add_argument("--shard-size", type=positive_float, default=None, metavar="MB",
                   help="a store's largest shard file, in MB (default: 1/64 of the memory compressed, between 16 and "
                   "512, so that up to 64 processes share the work evenly); a larger document gets a shard alone")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from rcc_model.corpus import is_corpus

    if is_corpus(args.file):
        return _run_corpus(args)
    if args.shard_size is not None:
        raise ValueError("--shard-size sizes a store's shards: it needs a corpus (a folder, a glob or a .jsonl file)")
    from rcc_model.cli.checks import writable_file
    from rcc_model.cli.options import load_model_for

    output = writable_file(args.output or Path(f"{args.file}.rccmem" if args.file != "-" else "stdin.rccmem"))
    text = read_text(args.file)
    if args.question:
        text = f"{text}\n\n{args.question}"
    check_room(args.model, text, args.rate, args.storage, output)
    model = load_model_for(args, args.rate)
    memory = model.compress(text, batch_size=args.batch_size, progress=True, rate=args.rate, keep_text=args.keep_text)
    memory.save(output, dtype=args.storage)
    print(f"{output}: {memory.token_count} tokens -> {memory.num_slots} slots "
          f"({output.stat().st_size / 1e6:.1f} MB), model {memory.fingerprint}")
    return 0


def _run_corpus(args: argparse.Namespace) -> int:
    """A corpus into a store; under `accelerate launch` every process takes its share."""
    if args.question:
        raise ValueError("--question compresses one text with a question: it does not apply to a corpus")
    from rcc_model.cli.checks import writable_folder
    from rcc_model.corpus import Corpus
    from rcc_model.store_builder import check_output, compress_corpus

    corpus = Corpus(args.file)  # no files, a missing JSONL: an error before the model loads
    name = Path(args.file.split("*")[0].rstrip("/") or "corpus")
    output = args.output or name.with_name(f"{name.stem or 'corpus'}.rccstore")
    check_output(output)
    writable_folder(output, "memory store")
    state = _process_state()
    from rcc_model.cli.options import load_model_for

    if args.device is None and state is not None and state.device.type != "cpu":
        args.device = str(state.device)  # each process on its own accelerator
    model = load_model_for(args, args.rate)
    report = compress_corpus(model, corpus, output, rate=args.rate, storage=args.storage,
                             shard_mb=args.shard_size, batch_size=args.batch_size,
                             progress=True, state=state)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)  # MB
    rank = f"process {state.process_index + 1}/{state.num_processes}" if state is not None else "process 1/1"
    print(f"{rank}: {report.compressed_documents} documents, {report.compressed_tokens} tokens in "
          f"{report.seconds:.1f} s ({report.tokens_per_s:.0f} tokens/s), peak RSS {peak:.0f} MB", flush=True)
    if state is None or state.is_main_process:
        for line in report.skipped:
            print(f"skipped {line}", file=sys.stderr)
        print(f"{output}: {report.documents} documents ({report.planned} compressed now, {report.already_stored} "
              f"already stored with the same text)")
    return 0


def read_text(source: str) -> str:
    """The UTF-8 text of a file (or of standard input, '-'); an empty one is refused."""
    from rcc_model.cli.checks import readable_file

    try:
        text = sys.stdin.read() if source == "-" else readable_file(source, "text file").read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source} is not UTF-8 text ({e.reason} at byte {e.start}): convert it to UTF-8 "
                         "first") from e
    if not text.strip():
        raise ValueError(f"{'standard input' if source == '-' else source} holds no text to compress")
    return text


def _process_state():
    """accelerate's process state when launched as several processes (CPU ones talk over gloo), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    from rcc_model.bases import default_device

    return PartialState(cpu=default_device().type == "cpu")


def check_room(model: str, text: str, rate: int | None, storage: str | None, output: Path) -> None:
    """Refuse, before the model loads, a text whose memory would not fit in the RAM available or the disk free
    at `output`: slots x entries x hidden x bytes, from the model's configs and its tokenizer alone."""
    import json
    import math
    import shutil

    import torch

    from rcc_model import bases
    from rcc_model.checkpoint import load_tokenizer_only, resolve_checkpoint
    from rcc_model.config import RCCConfig

    config = RCCConfig.load(resolve_checkpoint(model))
    base = json.loads((bases.resolve_base(config.base) / "config.json").read_text())
    entries = int(base.get("num_hidden_layers", base.get("n_layer", 0))) + 1
    hidden = int(base.get("hidden_size", base.get("n_embd", 0)))
    tokens = len(load_tokenizer_only(model)(text, add_special_tokens=False)["input_ids"])
    shortest = config.window // 2 if config.split == "sentence" else config.window  # the shortest window but the last
    slots = math.ceil(tokens / (rate or config.rate)) + math.ceil(tokens / shortest)  # a partial slot per window
    held = slots * entries * hidden * getattr(torch, config.memory_dtype).itemsize
    written = slots * entries * (hidden + 4) if storage == "int8" else \
        slots * entries * hidden * getattr(torch, storage or config.memory_dtype).itemsize
    shape = f"{tokens:,} tokens -> about {slots:,} slots x {entries} entries x {hidden}"
    if held > free_memory():
        raise ValueError(f"the memory of this text would need {held / 1e9:.1f} GB of RAM ({shape}) and "
                         f"{free_memory() / 1e9:.1f} GB is available: compress it in parts or at a higher --rate")
    folder = next(p for p in (output.absolute().parent, *output.absolute().parents) if p.exists())
    if written > shutil.disk_usage(folder).free:
        raise ValueError(f"{output} would need {written / 1e9:.1f} GB ({shape}) and {folder} has "
                         f"{shutil.disk_usage(folder).free / 1e9:.1f} GB free: write it elsewhere with -o, "
                         "or store it smaller with --storage int8")


def free_memory() -> int:
    """Bytes of RAM available to a new allocation: Linux's MemAvailable, else psutil's, else no limit."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ModuleNotFoundError:
        import sys

        return sys.maxsize
    return int(psutil.virtual_memory().available)
