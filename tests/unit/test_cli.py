"""The `rcc` commands in-process, on a tiny checkpoint (the packaged default's are in tests/integration)."""

import pytest

from rcc_model import CompressedMemory
from rcc_model.cli import main


def test_compress_and_read_at_a_rate_with_weights_of_its_own(rate_weights_checkpoint, tmp_path, capsys):
    folder, fingerprints = rate_weights_checkpoint
    text = tmp_path / "doc.txt"
    text.write_text("The harbour office keeps a ledger of every ship that docks there. " * 8)
    model = ["--model", folder, "--device", "cpu"]
    assert main(["compress", str(text), "--rate", "8", "-o", str(tmp_path / "doc.rccmem"), *model]) == 0
    memory = CompressedMemory.load(tmp_path / "doc.rccmem")
    assert (memory.rate, memory.fingerprint) == (8, fingerprints[8])
    assert main(["reconstruct", str(tmp_path / "doc.rccmem"), *model]) == 0  # the r = 8 weights read it back
    assert main(["reconstruct", str(tmp_path / "doc.rccmem"), "--no-repeat-ngram", "3", "--beams", "2",
                 "--verify", "30", "--anchored", *model]) == 0
    assert main(["reconstruct", str(tmp_path / "doc.rccmem"), "--greedy", *model]) == 0
    capsys.readouterr()
    assert main(["reconstruct", str(tmp_path / "doc.rccmem"), "--greedy", "--beams", "2", *model]) == 2
    assert "--greedy is --beams 1 --verify 0 --no-anchored" in capsys.readouterr().err
    assert main(["ask", str(tmp_path / "doc.rccmem"), "Who keeps a ledger?", "--max-new-tokens", "2", *model]) == 0
    assert main(["ask", str(tmp_path / "doc.rccmem"), "Who keeps a ledger?", "--max-new-tokens", "2",
                 "--from-reconstruction", "--greedy", "--read-slots", "4", *model]) == 0
    assert "reading the reconstruction of 1 of" in capsys.readouterr().err
    assert main(["ask", str(tmp_path / "doc.rccmem"), "Who keeps a ledger?", "--max-new-tokens", "2",
                 "--from-reconstruction", "--read-slots", "4", "--rank", "anchored-greedy", *model]) == 0
    assert "reading the reconstruction of 1 of" in capsys.readouterr().err
    assert main(["ask", str(tmp_path / "doc.rccmem"), "Who keeps a ledger?", "--rank", "greedy", *model]) == 2
    assert "--rank ranks reconstructed windows: it needs --from-reconstruction" in capsys.readouterr().err
    assert main(["demo", "--rate", "8", *model]) == 0
    assert "rate 8" in capsys.readouterr().out
    assert main(["compress", str(text), "--rate", "16", *model]) == 2  # never trained at 16
    assert "trained at rate 4, not 16" in capsys.readouterr().err


def _eval_qa(folder: str, tmp_path) -> list[str]:
    """`rcc eval qa` on one PwC-style row, without the full-text baseline, on the checkpoint in `folder`."""
    import json

    rows = tmp_path / "qa.jsonl"
    rows.write_text(json.dumps({"input": "The ledger is kept in the harbour office.", "prompt": "Where is the ledger?",
                                "answer": "in the harbour office"}) + "\n")
    return ["eval", "qa", "--pwc", str(rows), "--no-baseline", "--model", folder, "--device", "cpu"]


def test_eval_takes_the_abstention_margin_and_records_it_and_the_dtype(rate_weights_checkpoint, tmp_path, capsys):
    import json

    command = _eval_qa(rate_weights_checkpoint[0], tmp_path)
    assert main([*command, "--out", str(tmp_path / "own")]) == 0  # the model's own: this one has none
    assert main([*command, "--abstention-margin", "none", "--dtype", "bfloat16", "--out", str(tmp_path / "plain")]) == 0
    for run in ("own", "plain"):
        assert json.loads((tmp_path / run / "qa.json").read_text())["abstention_margin"] is None
    assert json.loads((tmp_path / "plain" / "qa.json").read_text())["dtype"] == "bfloat16"
    assert "| dtype | bfloat16 |" in (tmp_path / "plain" / "qa.md").read_text()
    assert main([*command, "--abstention-margin", "1.5", "--out", str(tmp_path / "weighed")]) == 2
    assert "needs `abstention`" in capsys.readouterr().err  # this model was given no abstention to weigh
    assert main([*command, "--from-reconstruction", "--out", str(tmp_path / "reconstructed")]) == 0
    assert json.loads((tmp_path / "reconstructed" / "qa.json").read_text())["read_from"] == "reconstruction"
    assert main(["eval", "reconstruction", "--from-reconstruction", "--model", rate_weights_checkpoint[0]]) == 2
    assert "--from-reconstruction answers questions" in capsys.readouterr().err


def test_eval_reads_a_rate_with_weights_of_its_own_and_takes_no_abbreviations(rate_weights_checkpoint, tmp_path,
                                                                                capsys):
    import json

    import pytest

    command = _eval_qa(rate_weights_checkpoint[0], tmp_path)
    for rate in (4, 8):
        assert main([*command, "--rate", str(rate), "--out", str(tmp_path / f"r{rate}")]) == 0
        assert json.loads((tmp_path / f"r{rate}" / "qa.json").read_text())["rate"] == rate
    assert main([*command, "--rate", "16", "--out", str(tmp_path / "r16")]) == 2
    assert "not 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # once `--rate` read as `--rates`, and evaluated the default weights
        main([*command, "--rat", "8", "--out", str(tmp_path / "abbreviated")])


def test_ask_reads_the_windows_that_match_when_the_memory_keeps_its_text(text_rcc, capsys):
    import dataclasses

    from rcc_model import GenerationInfo, ReadingPolicy
    from rcc_model.cli.ask import _say_what_was_read

    def read(memory, question, policy):
        info = GenerationInfo()
        list(text_rcc.stream(memory, question, max_new_tokens=1, reading=policy, info=info))
        _say_what_was_read(info)
        return info

    text_rcc.config = dataclasses.replace(text_rcc.config, read_slots=8, read_alignments=2)  # one 32-token window
    filler = "Real text does not repeat itself like filler does. " * 6
    report = filler[:60] + "The door of the depot is painted teal. " + filler * 2
    kept = text_rcc.compress(report)  # keeps its text by default
    question = [{"role": "user", "content": "What colour is the door of the depot?"}]
    info = read(kept, question, ReadingPolicy(read_slots=8))  # the model's expand_tokens: 0, slots only
    assert info.reading.memory.num_slots == 8 and "door of the depot is painted teal" in info.reading.texts[0]
    assert "read 1 of 5 windows (0 as text, 1 as slots)" in capsys.readouterr().err
    info = read(kept, question, ReadingPolicy(expand_tokens=32, read_slots=8))  # the best as text, a neighbour
    assert "door of the depot is painted teal" in info.reading.context and info.reading.memory.num_slots <= 8
    assert "(1 as text, 1 as slots)" in capsys.readouterr().err
    two = [{"role": "user", "content": "What colour is the door of the depot, and what does real text not do?"}]
    info = read(kept, two, ReadingPolicy(read_slots=8))  # a reading of its own for each part
    assert [p.reading.memory.num_slots for p in info.parts] == [8, 8] and info.reading is None
    assert info.memory_slots == sum(p.memory_slots for p in info.parts)
    said = capsys.readouterr().err
    assert "part 1 of the question: read 1 of 5 windows" in said and "part 2 of the question: read" in said
    info = read(kept, two, ReadingPolicy(read_slots=8, split_questions=False))
    assert not info.parts and "part" not in capsys.readouterr().err
    bare = text_rcc.compress(report, keep_text=False)
    with pytest.warns(UserWarning, match="keep_text"):
        info = read(bare, question, ReadingPolicy(read_slots=8))  # no text: read whole
    assert info.memory_slots == bare.num_slots and not info.reading.selected and "read" not in capsys.readouterr().err


def test_data_build_refuses_a_bad_wording_before_it_writes_anything(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "build", "--out", str(out), "--qa-codes", "1.0", "--model", "no-such-model"]) == 2
    assert "`codes` is a share of facts" in capsys.readouterr().err
    assert main(["data", "build", "--out", str(out), "--qa-instructions", "-0.5", "--model", "no-such-model"]) == 2
    assert "`instructions` is a share" in capsys.readouterr().err
    assert not out.exists()


def test_every_option_of_every_command_has_help():
    import argparse

    from rcc_model.cli import build_parser

    def parsers(parser: argparse.ArgumentParser, name: str):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    missing = [f"{name}: {'/'.join(action.option_strings) or action.dest}"
               for name, parser in parsers(build_parser(), "rcc") for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help]
    assert not missing, missing


def test_compress_refuses_a_text_too_large_for_the_ram_or_the_disk_before_loading_the_model(
        rate_weights_checkpoint, tmp_path, capsys, monkeypatch):
    import shutil

    text = tmp_path / "doc.txt"
    text.write_text("The harbour office keeps a ledger of every ship that docks there. " * 40)
    command = ["compress", str(text), "--model", rate_weights_checkpoint[0], "--device", "cpu"]

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("rcc_model.cli.options.load_model_for", never)
    monkeypatch.setattr("rcc_model.cli.compress.free_memory", lambda: 10_000)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "GB of RAM" in error and "tokens -> about" in error and error.count("\n") == 1
    monkeypatch.setattr("rcc_model.cli.compress.free_memory", lambda: 1 << 40)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 10_000))
    assert main([*command, "-o", str(tmp_path / "new" / "doc.rccmem")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path} has 0.0 GB free" in error and "--storage int8" in error and error.count("\n") == 1
    assert not (tmp_path / "new").exists()
