"""The packaged default RCC on the real SmolLM2-135M-Instruct base, and the `rcc` CLI end to end."""

import json
import shutil
import subprocess
import sys

import pytest

from rcc_model import CompressedMemory, RCCModel
from rcc_model.checkpoint import resolve_checkpoint
from rcc_model.evaluation.protocols import teacher_forced_loss
from rcc_model.samples import chronicle, passkey_document, passkey_fact


@pytest.fixture(scope="module")
def default_model():
    return RCCModel.from_pretrained("default", dtype="float32", device="cpu")


def test_default_loads_on_the_real_base_with_its_tokenizer(default_model):
    assert default_model.config.base == "smollm2-135m-instruct"
    assert len(default_model.tokenizer) == 49152
    assert default_model.max_positions == 8192


def test_a_document_several_windows_long_round_trips_through_a_memory_file(default_model, tmp_path):
    document, question = passkey_document(12345, sentences=80)
    memory = default_model.compress(document)
    assert memory.num_windows >= 4
    assert memory.num_slots == sum(-(-n // 4) for n in memory.window_tokens)
    path = memory.save(tmp_path / "doc.rccmem")
    loaded = CompressedMemory.load(path, device="cpu").to(memory.dtype)
    answer = default_model.ask(memory, question, max_new_tokens=12)
    assert default_model.ask(loaded, question, max_new_tokens=12) == answer


def test_a_compressed_question_leaves_the_answer_its_max_new_tokens(default_model):
    """ask(memory, None): recalling the question does not use up the answer's tokens (it used to return '')."""
    document = "The lighthouse keeper, Ada Brenner, wrote 14 March 1897 in the log. The harbour code is 4471."
    memory = default_model.compress(document + "\n\nWhat is the harbour code?")
    assert "4471" in default_model.ask(memory, None, max_new_tokens=8)


def test_constrained_json_from_the_default_meets_every_bound(default_model):
    import jsonschema

    schema = {"type": "object", "required": ["code", "year"], "properties": {
        "code": {"type": "string", "pattern": "^[0-9]{4}$"}, "year": {"type": "integer", "minimum": 1800,
                                                                      "maximum": 1999},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 2, "maxItems": 3}}}
    memory = default_model.compress("The harbour code is 4471; the keeper started in 1897.")
    value = default_model.generate_json(memory, [{"role": "user", "content": "Fill in the record."}], schema,
                                        max_new_tokens=32)
    jsonschema.validate(value, schema)


def test_the_fingerprint_is_the_same_in_every_process(default_model):
    code = "from rcc_model import RCCModel; print(RCCModel.from_pretrained('default', device='cpu').fingerprint)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == default_model.fingerprint


def test_the_default_weighs_its_abstention_and_keeps_it_where_its_memory_holds_no_answer(default_model):
    import dataclasses

    from rcc_model.abstention import abstention_gap

    memory = default_model.compress("The harbour office keeps a ledger of every ship that docks there. The harbour "
                                    "office was founded in 1862. Its keeper writes the tides on a slate by the door.")

    def chat(question: str) -> list[dict]:
        return [{"role": "user", "content": question}]

    unanswerable = chat("What is the access code for the central depot?")
    assert default_model.generate(memory, chat("In which year was the harbour office founded?")) == "1862"
    weighed = abstention_gap(default_model, default_model.prefill_prompt(memory, unanswerable))
    assert weighed.gap > default_model.config.abstention_margin  # weighed against another answer, and kept
    assert default_model.generate(memory, unanswerable) == "The document does not say."
    shipped = default_model.config
    try:  # within a wider margin, the other answer is the abstention in lower case: kept as the model writes it
        default_model.config = dataclasses.replace(shipped, abstention_margin=weighed.gap + 1)
        assert default_model.generate(memory, unanswerable) == "The document does not say."
    finally:
        default_model.config = shipped


def test_at_rate_8_the_default_reads_its_memory_with_weights_of_its_own(default_model, tmp_path):
    """Its r = 8 weights (`r8/`, MODEL_CARD stages 15, 16 and 21) regenerate a window from its memory at 8 better
    than its r = 4 weights read at 8 do, and better than from another window's memory (they read it)."""
    packaged = resolve_checkpoint("default")
    for name in ("rcc_config.json", "rcc_weights.safetensors"):  # the r = 4 weights alone: read at 8 as a measure
        shutil.copy(packaged / name, tmp_path / name)
    tokens = default_model.encode_text(chronicle(sentences=200, seed=3))
    windows = [tokens[start:start + 256] for start in (0, 512, 1024)]
    own, borrowed = (RCCModel.from_pretrained(source, rate=8, device="cpu") for source in ("default", tmp_path))
    assert (own.config.rate, borrowed.config.rate) == (8, 8)
    assert own.fingerprint != default_model.fingerprint == borrowed.fingerprint
    losses = [teacher_forced_loss(model, windows, windows, batch_size=3, rate=8) for model in (own, borrowed)]
    another_windows = teacher_forced_loss(own, windows[1:] + windows[:1], windows, batch_size=3, rate=8)
    assert losses[0] < losses[1] and losses[0] < another_windows, (losses, another_windows)


def rcc(*args):
    return subprocess.run([sys.executable, "-m", "rcc_model.cli", *args], capture_output=True, text=True)


def test_cli_compress_info_ask_reconstruct(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text(passkey_document(777, sentences=8)[0])  # one window: reconstruct decodes 158 tokens
    done = rcc("compress", str(text), "-o", str(tmp_path / "doc.rccmem"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    info = json.loads(rcc("info", str(tmp_path / "doc.rccmem"), "--json").stdout)
    assert info["rate"] == 4 and info["slots"] * 4 >= info["tokens"] > 0
    answer = rcc("ask", str(tmp_path / "doc.rccmem"), "What is the pass key?", "--max-new-tokens", "8",
                 "--device", "cpu")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    # greedy: the checked search is the model's own test (test_decoding_checked_...), this one the command's
    rebuilt = rcc("reconstruct", str(tmp_path / "doc.rccmem"), "--greedy", "--device", "cpu")
    assert rebuilt.returncode == 0 and len(rebuilt.stdout) > 100, rebuilt.stderr


def test_cli_ask_reads_a_long_memory_that_keeps_its_text_where_the_question_matches(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text(passkey_document(27182, sentences=120)[0])  # 8 windows, 498 slots: more than read_slots (64)
    done = rcc("compress", str(text), "-o", str(tmp_path / "doc.rccmem"), "--keep-text", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert json.loads(rcc("info", str(tmp_path / "doc.rccmem"), "--json").stdout)["window_texts"] == "kept"
    answer = rcc("ask", str(tmp_path / "doc.rccmem"), "What is the pass key?", "--max-new-tokens", "12",
                 "--device", "cpu")
    assert answer.returncode == 0 and "read 1 of 8 windows" in answer.stderr, answer.stderr
    assert "27182" in answer.stdout


def test_cli_ask_answers_from_the_reconstruction_of_a_memory_without_its_text(tmp_path):
    text = tmp_path / "doc.txt"
    # 2 windows (256 and 156 tokens), the pass key whole in the second, the shorter: each window decoded costs
    # a tenth of a second per token on a 2-core CPU. (With less text around the key, the untouched base that
    # answers from the reconstruction misreads it: "The pass key is a type of coin".)
    text.write_text(f"{chronicle(sentences=18)} {passkey_fact(48213)} {chronicle(sentences=6, seed=1)}")
    done = rcc("compress", str(text), "-o", str(tmp_path / "doc.rccmem"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    # ranked on a cheap anchored-greedy pass, only the window read decoded with the checked search, at 2 beams
    # (the model's 8 take minutes on a 2-core CPU without bf16 instructions)
    answer = rcc("ask", str(tmp_path / "doc.rccmem"), "What is the pass key?", "--from-reconstruction",
                 "--rank", "anchored-greedy", "--beams", "2", "--max-new-tokens", "12", "--device", "cpu")
    assert answer.returncode == 0 and "reading the reconstruction of 1 of 2 windows" in answer.stderr, answer.stderr
    assert "48213" in answer.stdout


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.rccmem"
    bad.write_bytes(b"nope")
    done = rcc("info", str(bad))
    assert done.returncode == 2 and "not a readable memory file" in done.stderr and "Traceback" not in done.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    done = rcc("compress", str(empty), "--device", "cpu")
    assert done.returncode == 2 and "empty" in done.stderr
    empty.write_text("Some text.")
    done = rcc("compress", str(empty), "--rate", "16", "--device", "cpu")
    assert done.returncode == 2 and "trained at rate 4, not 16" in done.stderr


def test_cli_help_explains_the_commands():
    out = rcc("--help").stdout
    for command in ("compress", "ask", "reconstruct", "info", "demo"):
        assert command in out


PROSE = ("When the ferry stopped running in the winter of that year, the island's school moved into the back room of "
         "the post office. Twelve children sat at two long tables, and the postmistress, who had once trained as a "
         "teacher, taught arithmetic between the morning and afternoon deliveries. The older pupils sorted letters "
         "for practice and learned the names of every harbour on the coast from the stamps.")


def test_decoding_checked_against_the_memory_keeps_a_window_in_place(default_model):
    from rcc_model.beam_search import beam_search

    ids = default_model.encode_text(PROSE)
    memory = default_model.compress(ids)
    assert memory.num_windows == 1

    def in_place(written: list[int]) -> float:
        return sum(a == b for a, b in zip(written, ids)) / len(ids)

    greedy = default_model.generate_ids(memory, max_new_tokens=len(ids), min_new_tokens=len(ids))
    checked = beam_search(default_model, [memory], len(ids), num_beams=8, verify=30.0, anchored=True).ids[0]
    assert in_place(checked) >= 0.5 and in_place(checked) > in_place(greedy)
