"""The `rcc` commands refuse bad flags, inputs and outputs in one line (status 2) before any model loads, and
end on Ctrl-C with status 130, never a traceback."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rcc_model.cli import main

NO_MODEL = ["--model", "no-such-model"]  # every error below comes before a model is even looked up


def _no_model(argv: list[str]) -> list[str]:
    return argv if argv[0] in ("info", "train") else [*argv, *NO_MODEL]


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was found")

    for name in ("load_model", "load_model_for"):
        monkeypatch.setattr(f"rcc_model.cli.options.{name}", never)
    monkeypatch.setattr("rcc_model.modeling.RCCModel.from_pretrained", never)


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("The ferry leaves at dawn. " * 4)
    (tmp_path / "doc.txt").write_text("The harbour office keeps a ledger of every ship. " * 4)
    (tmp_path / "blank.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "broken.rccmem").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + bytes(64))
    return {p.name: p for p in tmp_path.iterdir()}


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rcc {command}: error: "), err
    assert "Traceback" not in err
    return err


FLAGS = [  # (arguments, what the error says): refused while parsing
    (["ask", "m.rccmem", "q", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1, got 0"),
    (["ask", "m.rccmem", "q", "--temperature", "nan"], "--temperature: expected a finite number, got 'nan'"),
    (["ask", "m.rccmem", "q", "--temperature", "-0.5"], "--temperature: must be 0 or more, got -0.5"),
    (["ask", "m.rccmem", "q", "--top-p", "1.5"], "--top-p: must be above 0 and at most 1, got 1.5"),
    (["ask", "m.rccmem", "q", "--top-p", "0"], "--top-p: must be above 0 and at most 1, got 0"),
    (["ask", "m.rccmem", "q", "--read-slots", "-4"], "--read-slots: must be at least 1, got -4"),
    (["compress", "doc.txt", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["compress", "docs/", "--shard-size", "inf"], "--shard-size: expected a finite number"),
    (["reconstruct", "m.rccmem", "--beams", "0"], "--beams: must be at least 1, got 0"),
    (["eval", "passkey", "--depths", "1.5"], "--depths: must be between 0 and 1, got 1.5"),
    (["eval", "passkey", "--trials", "two"], "--trials: expected an integer, got 'two'"),
    (["train", "run.json", "--max-minutes", "0"], "--max-minutes: must be above 0, got 0"),
]


@pytest.mark.parametrize(("argv", "message"), FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in FLAGS])
def test_a_flag_out_of_range_is_refused_while_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(_no_model(argv))
    assert exit_.value.code == 2
    err = _one_error_line(capsys, argv[0])
    assert message in err and f"see rcc {argv[0]} --help" in err


RUNS = [  # (arguments, with {name} for a file of `files`, what the error says): refused before a model loads
    (["ask", "{folder}", "q"], "{folder} is a folder; expected a memory file"),
    (["ask", "{folder}/missing.rccmem", "q"], "memory file {folder}/missing.rccmem does not exist"),
    (["ask", "{broken.rccmem}", "q"], "is not a readable memory file"),
    (["ask", "{broken.rccmem}", "q", "--greedy"], "--greedy decodes reconstructed text"),
    (["ask", "{broken.rccmem}", "q", "--beams", "2", "--no-anchored"], "--beams, --anchored/--no-anchored decode"),
    (["ask", "{broken.rccmem}", "q", "--seed", "3"], "--seed only changes sampled answers"),
    (["ask", "{broken.rccmem}", "q", "--top-p", "0.9"], "--top-p only changes sampled answers"),
    (["ask", "{broken.rccmem}", "--read-slots", "8"], "--read-slots read the memory for a question"),
    (["ask", "{broken.rccmem}", "  "], "the question is empty"),
    (["reconstruct", "{folder}"], "{folder} is a folder; expected a memory file"),
    (["info", "{folder}/missing.rccmem"], "does not exist"),
    (["compress", "{doc.txt}", "-o", "{folder}"], "output file {folder} is a folder: give a file path with -o"),
    (["compress", "{doc.txt}", "-o", "{doc.txt}/x.rccmem"], "{doc.txt} is a file, not a folder"),
    (["compress", "{folder}/missing.txt"], "text file {folder}/missing.txt does not exist"),
    (["compress", "{latin1.txt}"], "is not UTF-8 text"),
    (["compress", "{blank.txt}"], "holds no text to compress"),
    (["compress", "{folder}"], "{folder} names no files to compress"),
    (["compress", "{corpus}", "-o", "{doc.txt}"], "{doc.txt} is a file; a memory store is a folder"),
    (["eval", "qa", "--data", "{folder}/none"], "--data {folder}/none is not a folder"),
    (["eval", "qa", "--pwc", "{folder}"], "{folder} is a folder; expected a PwC jsonl file"),
    (["eval", "passkey", "--greedy"], "passkey decodes them only with --from-reconstruction"),
    (["eval", "passkey", "--out", "{doc.txt}"], "output folder {doc.txt} is a file"),
    (["data", "build", "--out", "{doc.txt}"], "output folder {doc.txt} is a file"),
    (["train", "{folder}/run.json"], "config file {folder}/run.json does not exist"),
]


@pytest.mark.parametrize(("argv", "message"), RUNS, ids=[" ".join(a) for a, _ in RUNS])
def test_a_bad_input_or_output_is_one_line_before_any_model_loads(argv, message, files, capsys):
    fill = {f"{{{name}}}": str(path) for name, path in files.items()}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    assert main(_no_model([filled(a) for a in argv])) == 2
    assert filled(message) in _one_error_line(capsys, argv[0])


def test_an_unwritable_output_folder_is_refused_before_compressing(files, capsys, monkeypatch):
    folder = files["folder"] / "locked"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: make the folder refuse new files another way
        import tempfile

        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    else:
        folder.chmod(0o555)
    try:
        assert main(["compress", str(files["doc.txt"]), "-o", str(folder / "doc.rccmem"), *NO_MODEL]) == 2
    finally:
        folder.chmod(0o755)
    err = _one_error_line(capsys, "compress")
    assert f"{folder} does not take new files (Permission denied); choose another path" in err


@pytest.mark.parametrize(("raised", "status", "line"), [
    (PermissionError(errno.EACCES, "Permission denied", "/x/y"), 2, "rcc info: error: [Errno 13] Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"), 2, "rcc info: error: [Errno 28] No space left on device"),
    (KeyboardInterrupt(), 130, "rcc info: interrupted"),
])
def test_os_errors_and_interrupts_end_in_one_line(raised, status, line, monkeypatch, capsys):
    def run(args):
        raise raised

    monkeypatch.setattr("rcc_model.cli.info.run", run)
    assert main(["info", "x.rccmem"]) == status
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1


def _default_sigint() -> None:
    """In the child before it runs: SIGINT handled by default and not blocked, whatever the test process inherited
    or set (a run started in the background ignores it; a library may block it in this thread)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _wait_until_blocked_reading(pid: int, deadline: float) -> None:
    """Until the process sleeps in `read` on the pipe. A SIGINT that lands between its `open` returning and its
    `read` starting is only flagged by CPython's C handler, and the `read` that follows blocks without noticing
    (no EINTR): a race in the interpreter, not in the command, so the signal waits for the blocked `read`."""
    wchan = Path(f"/proc/{pid}/wchan")
    while not wchan.read_text().endswith("pipe_read"):  # anon_pipe_read on newer kernels
        assert time.monotonic() < deadline, f"the command never blocked reading its input ({wchan.read_text()})"
        time.sleep(0.05)


def test_ctrl_c_ends_a_running_command_with_status_130_and_no_traceback(tmp_path):
    """SIGINT to `python -m rcc_model.cli compress` while it reads its input (a named pipe that never ends)."""
    fifo = tmp_path / "input.txt"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "rcc_model.cli", "compress", str(fifo), *NO_MODEL],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_default_sigint)
    writer, deadline = None, time.monotonic() + 60
    try:
        while writer is None:  # a writer can open the pipe once the command holds it open for reading
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                assert e.errno == errno.ENXIO and process.poll() is None and time.monotonic() < deadline, e
                time.sleep(0.05)
        _wait_until_blocked_reading(process.pid, deadline)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if writer is not None:
            os.close(writer)
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and err.strip() == "rcc compress: interrupted"
