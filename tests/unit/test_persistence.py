"""Nothing lost: writers touch only their own files, a kill at any step leaves the old or the new version
loadable, temporaries are cleaned, the umask and symbolic links are respected, manifests stay inside their
folder."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from llama_index.core import Document, StorageContext, load_index_from_storage

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import CompressedMemory, MemoryFileError, RCCModel
from rcc_model.atomic import JOURNAL, atomic_file, atomic_folder, fresh_folder
from tests.conftest import randomize_bridges, tiny_llama

KILLED = 75  # the exit status of a writer killed by the fault injector


def docs(ids=(0, 1, 2)) -> list[Document]:
    return [Document(text=f"The harbour office keeps ledger number {i} of every ship that docks there. " * 4,
                     id_=f"doc-{i}") for i in ids]


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------- fault injection
_WRITE_OPS = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"), (os, "fsync"),
              (os, "open"), (shutil, "rmtree"), (builtins, "open"), (io, "open")]


def _writes(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a call of `name` changes the disk (opens for reading do not)."""
    if name == "open" and args and isinstance(args[0], (str, os.PathLike)) and len(args) > 1 \
            and isinstance(args[1], int):  # os.open(path, flags)
        return bool(args[1] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if name == "open":
        mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
        return any(c in mode for c in "wax+")
    return True


def kill() -> None:
    os._exit(KILLED)  # as a kill: no `finally`, no cleanup


def disk_full() -> None:
    raise OSError(28, "No space left on device")


def inject(setattr_: Callable, at: int | None, fault: Callable[[], None] = kill) -> list[str]:
    """Wrap every filesystem operation that writes; the `at`-th one (from 0) calls `fault` instead of running.
    Returns the list the operations are recorded in."""
    done: list[str] = []
    for module, name in _WRITE_OPS:
        real = getattr(module, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            if _writes(_name, args, kwargs):
                if len(done) == at:
                    done.append(f"failed {_name}")
                    fault()
                done.append(_name)
            return _real(*args, **kwargs)

        setattr_(module, name, wrapper)
    return done


def count_steps(write: Callable[[], object]) -> int:
    with pytest.MonkeyPatch.context() as patch:
        steps = inject(patch.setattr, None)
        write()
    return len(steps)


def killed_at(step: int, write: Callable[[], object]) -> bool:
    """Run `write` in a forked child killed at filesystem operation `step`; True if the kill came before it
    finished."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            inject(setattr, step)
            write()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED), f"the writer failed with exit status {code} at step {step}"
    return code == KILLED


def kill_at_every_step(old_folder: Path, work: Path, write: Callable[[], object],
                       version: Callable[[], str]) -> list[str]:
    """Copy `old_folder` to `work`, kill `write` (which writes `work`) at each filesystem step in turn and read
    the version that loads afterwards; the versions seen, step by step."""
    shutil.copytree(old_folder, work)
    steps = count_steps(write)
    seen = []
    for step in range(steps + 1):
        shutil.rmtree(work)
        shutil.copytree(old_folder, work)
        killed = killed_at(step, write)
        assert killed == (step < steps)
        seen.append(version())
    return seen


fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill is simulated with os.fork")


def load_with_llama_index(folder: Path, model: RCCModel) -> RCCMemoryIndex:
    """LlamaIndex's own way: its storage context first, then the index (which finishes an interrupted persist
    and reads the storage again)."""
    context = StorageContext.from_defaults(persist_dir=str(folder))
    return load_index_from_storage(context, model=model, persist_dir=folder)


@fork_only
@pytest.mark.parametrize(("load", "storage"), [(RCCMemoryIndex.load_from_disk, "int8"), (load_with_llama_index, "int8"),
                                               (RCCMemoryIndex.load_from_disk, "text")])
def test_a_kill_at_any_step_of_persist_leaves_the_old_or_the_new_index(text_rcc, tmp_path, load, storage):
    old = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage=storage, cache_dir=tmp_path / "cache")
    store = tmp_path / "old"
    old.persist(store)
    (store / "notes.txt").write_text("the user's own file")
    new = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage=storage, cache_dir=tmp_path / "cache")
    new.delete_ref_doc("doc-0", delete_from_docstore=True)  # its memory file becomes obsolete
    new.insert(docs([3])[0])
    work = tmp_path / "work"

    def version() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a damaged (mixed-version) memory file warns
            loaded = load(work, model=text_rcc)
        assert loaded.damaged == []
        return ",".join(sorted(loaded.ref_doc_info))

    seen = kill_at_every_step(store, work, lambda: new.persist(work), version)
    assert set(seen) == {"doc-0,doc-1,doc-2", "doc-1,doc-2,doc-3"} and seen[0] == "doc-0,doc-1,doc-2"
    assert seen[-1] == "doc-1,doc-2,doc-3"
    assert seen == sorted(seen)  # once the new version loads, the old one never comes back

    new.persist(work)  # the next persist after the last kill leaves nothing behind
    clean = tmp_path / "clean"
    new.persist(clean)
    (clean / "notes.txt").write_text("the user's own file")
    assert listing(work) == listing(clean)
    assert (work / "notes.txt").read_text() == "the user's own file"


@pytest.fixture()
def base_dir(tmp_path):
    path = tmp_path / "base"
    tiny_llama().save_pretrained(path)
    return path


@fork_only
def test_a_kill_at_any_step_of_save_pretrained_leaves_the_old_or_the_new_checkpoint(tmp_path, base_dir):
    old = randomize_bridges(RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32"), seed=1)
    new = randomize_bridges(RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32"), seed=2)
    folder = tmp_path / "old"
    old.save_pretrained(folder)
    (folder / "README.md").write_text("the user's notes")
    work = tmp_path / "work"

    seen = kill_at_every_step(folder, work, lambda: new.save_pretrained(work),
                              lambda: RCCModel.from_pretrained(work).fingerprint)
    assert set(seen) == {old.fingerprint, new.fingerprint} and seen[-1] == new.fingerprint
    assert seen.index(new.fingerprint) > 0 and all(f == new.fingerprint for f in seen[seen.index(new.fingerprint):])

    new.save_pretrained(work)
    clean = tmp_path / "clean"
    new.save_pretrained(clean)
    (clean / "README.md").write_text("the user's notes")
    assert listing(work) == listing(clean)


def test_an_error_at_any_step_of_persist_keeps_the_old_or_the_new_index_and_leaves_nothing(text_rcc, tmp_path):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc)
    store = index.persist(tmp_path / "store")
    index.delete_ref_doc("doc-0", delete_from_docstore=True)
    index.insert(docs([3])[0])
    shutil.copytree(store, tmp_path / "dry")
    steps = count_steps(lambda: index.persist(tmp_path / "dry"))
    for step in range(steps):
        with pytest.MonkeyPatch.context() as patch:
            inject(patch.setattr, step, disk_full)
            with contextlib.suppress(OSError):
                index.persist(store)
        loaded = RCCMemoryIndex.load_from_disk(store, model=text_rcc)
        assert sorted(loaded.ref_doc_info) in (["doc-0", "doc-1", "doc-2"], ["doc-1", "doc-2", "doc-3"])
        assert loaded.damaged == []
        index.persist(store)
        assert listing(store) == listing(tmp_path / "dry"), f"left behind after a failure at step {step}"


# ---------------------------------------------------------------------------------------------- your files
def test_persist_and_save_pretrained_keep_the_users_files(text_rcc, tmp_path, base_dir):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int8")
    store = index.persist(tmp_path / "store")
    (store / "notes.txt").write_text("mine")
    (store / "extra").mkdir()
    (store / "extra" / "data.csv").write_text("a,b")
    index.delete_ref_doc("doc-0", delete_from_docstore=True)
    index.persist(store)
    assert (store / "notes.txt").read_text() == "mine" and (store / "extra" / "data.csv").read_text() == "a,b"
    assert len(list((store / "rcc_memory").iterdir())) == 2  # the deleted document's memory file is gone
    assert sorted(RCCMemoryIndex.load_from_disk(store, model=text_rcc).ref_doc_info) == ["doc-1", "doc-2"]

    model = RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32")
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "README.md").write_text("my notes")
    randomize_bridges(model).save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "README.md").read_text() == "my notes"
    assert RCCModel.from_pretrained(tmp_path / "ckpt").fingerprint == model.fingerprint


def test_a_non_empty_folder_rcc_did_not_write_is_refused(text_rcc, tmp_path, base_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc)
    with pytest.raises(ValueError, match=rf"{folder} is not empty .*cat\.jpg.*choose another folder"):
        index.persist(folder)
    model = RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32")
    with pytest.raises(ValueError, match=rf"{folder} is not empty"):
        model.save_pretrained(folder)
    assert listing(folder) == ["cat.jpg"]

    model.save_pretrained(tmp_path / "ckpt")  # an index over a checkpoint would remove the checkpoint's files
    with pytest.raises(ValueError, match="holds an rcc-checkpoint, not an rcc-memory-index"):
        index.persist(tmp_path / "ckpt")
    with pytest.raises(NotADirectoryError, match="is a file"):
        index.persist(folder / "cat.jpg")


def test_a_folder_an_older_rcc_wrote_is_overwritten_in_place(text_rcc, tmp_path):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int8")
    store = index.persist(tmp_path / "store")
    (store / JOURNAL).unlink()  # what an older rcc left: no journal
    (store / "rcc_memory" / ("0" * 32)).write_bytes(b"an older version's memory file")
    index.delete_ref_doc("doc-0", delete_from_docstore=True)
    index.persist(store)
    assert len(list((store / "rcc_memory").iterdir())) == 2  # the whole of its own subfolder was rcc's
    assert sorted(RCCMemoryIndex.load_from_disk(store, model=text_rcc).ref_doc_info) == ["doc-1", "doc-2"]


def test_stale_temporaries_of_ended_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    folder = tmp_path / "f"
    with atomic_folder(folder, "rcc-test") as staging:
        (staging / "a.txt").write_text("1")
    (folder / f".rcc-staging.{dead}-0a1b2c3d").mkdir()
    (folder / f".a.txt.{dead}-0a1b2c3d.rcc-tmp").write_text("half")
    live = folder / f".a.txt.{os.getppid()}-0a1b2c3d.rcc-tmp"  # a writer still running
    live.write_text("busy")
    with atomic_folder(folder, "rcc-test") as staging:
        (staging / "a.txt").write_text("2")
    with atomic_file(folder / "a.txt") as tmp:
        tmp.write_text("3")
    assert listing(folder) == sorted([JOURNAL, "a.txt", live.name])


def test_a_fresh_folder_appears_whole_or_not_at_all_and_the_first_writer_wins(tmp_path):
    target = tmp_path / "bases" / "tiny"
    with pytest.raises(OSError, match="disk full"), fresh_folder(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise OSError("disk full")
    assert not target.exists() and listing(tmp_path / "bases") == []
    with fresh_folder(target) as tmp:
        (tmp / "config.json").write_text('{"first": true}')
        with fresh_folder(target) as other:  # a concurrent writer that finishes first
            (other / "config.json").write_text('{"second": true}')
    assert listing(tmp_path / "bases") == ["tiny", "tiny/config.json"]
    assert (target / "config.json").read_text() == '{"second": true}'


def test_a_fresh_folder_keeps_links_whose_target_is_elsewhere_or_nowhere(tmp_path):
    """An unpacked package links to files of other packages (a .deb's `underscore.js`): committing the folder
    syncs what it holds and leaves such links as they are."""
    target = tmp_path / "unpacked"
    with fresh_folder(target) as tmp:
        (tmp / "page.html").write_text("<p>")
        (tmp / "dangling.js").symlink_to(tmp_path / "not-installed" / "underscore.js")
    assert (target / "dangling.js").is_symlink() and not (target / "dangling.js").exists()
    assert (target / "page.html").read_text() == "<p>"


# ---------------------------------------------------------------------------------------------- modes, links
def test_written_files_and_folders_follow_the_umask(tmp_path, text_rcc):
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "plain.txt") as tmp:
            tmp.write_text("x")
        store = RCCMemoryIndex.from_documents(docs([0]), model=text_rcc, storage="int8").persist(tmp_path / "store")
    finally:
        os.umask(old)
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644
    assert (store / "docstore.json").stat().st_mode & 0o777 == 0o644
    assert (store / "rcc_memory").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (store / "rcc_memory").iterdir())

    os.chmod(tmp_path / "plain.txt", 0o600)  # a file replaced keeps the mode its owner gave it
    with atomic_file(tmp_path / "plain.txt") as tmp:
        tmp.write_text("y")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o600


def test_persisting_onto_a_linked_folder_writes_into_its_target_and_keeps_the_link(text_rcc, tmp_path):
    (tmp_path / "disk").mkdir()
    link = tmp_path / "store"
    link.symlink_to(tmp_path / "disk")
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc)
    index.persist(link)
    index.persist(link)
    assert link.is_symlink() and (tmp_path / "disk" / "rcc_manifest.json").is_file()
    assert sorted(RCCMemoryIndex.load_from_disk(link, model=text_rcc).ref_doc_info) == ["doc-0", "doc-1", "doc-2"]


def test_saving_onto_a_symbolic_link_writes_its_target_and_keeps_the_link(tmp_path):
    states = torch.randn(4, 3, 8)
    memory = CompressedMemory(states=states, fingerprint="f", base="b", rate=4, window=16, padding="masked",
                              window_tokens=[16], token_count=16, source_hash="h")
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "doc.rccmem"
    target.write_bytes(b"old")
    link = tmp_path / "doc.rccmem"
    link.symlink_to(target)
    memory.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert torch.equal(CompressedMemory.load(target).states, states)
    dangling = tmp_path / "gone.rccmem"
    dangling.symlink_to(tmp_path / "nowhere" / "x.rccmem")
    with pytest.raises(FileNotFoundError, match=r"symbolic link to .*does not exist"):
        memory.save(dangling)


# ---------------------------------------------------------------------------------------------- manifests
def test_a_manifest_entry_outside_the_index_folder_is_refused(text_rcc, tmp_path):
    store = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int8").persist(tmp_path / "store")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    manifest = json.loads((store / "rcc_manifest.json").read_text())
    for entry in manifest["entries"].values():
        entry["file"] = "../../secret.txt"
    (store / "rcc_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"names '\.\./\.\./secret\.txt', which is outside"):
        RCCMemoryIndex.load_from_disk(store, model=text_rcc)


@pytest.mark.parametrize("damage", ["{not json", '{"format": "rcc-memory-index", "rate": 4}',
                                    '{"format": "rcc-memory-index", "rate": 4, "entries": {"a": {"file": 3}}}'])
def test_a_damaged_manifest_is_a_memory_file_error_naming_it(text_rcc, tmp_path, damage):
    store = RCCMemoryIndex.from_documents(docs([0]), model=text_rcc).persist(tmp_path / "store")
    (store / "rcc_manifest.json").write_text(damage)
    with pytest.raises(MemoryFileError, match=r"rcc_manifest\.json is damaged"):
        RCCMemoryIndex.load_from_disk(store, model=text_rcc)


def test_a_damaged_docstore_is_a_value_error_naming_it(text_rcc, tmp_path):
    store = RCCMemoryIndex.from_documents(docs([0]), model=text_rcc).persist(tmp_path / "store")
    (store / "docstore.json").write_text('{"docstore/data": {')
    with pytest.raises(ValueError, match=r"docstore\.json is damaged \(JSONDecodeError"):
        RCCMemoryIndex.load_from_disk(store, model=text_rcc)


def test_a_damaged_journal_is_a_clear_error(tmp_path):
    folder = tmp_path / "f"
    with atomic_folder(folder, "rcc-test") as staging:
        (staging / "a.txt").write_text("1")
    (folder / JOURNAL).write_text(json.dumps({"kind": "rcc-test", "files": ["a.txt"], "obsolete": ["../x"],
                                              "staging": ".rcc-staging.1-00"}))
    with pytest.raises(ValueError, match=r"names '\.\./x', which is outside"), atomic_folder(folder, "rcc-test"):
        pass


# ---------------------------------------------------------------------------------------------- memory in RAM
PEAK = textwrap.dedent("""
    import resource, sys, torch
    from rcc_model import CompressedMemory
    def memory(slots):
        states = torch.randn(slots, 31, 576, dtype=torch.bfloat16)
        return CompressedMemory(states=states, fingerprint="f", base="b", rate=4, window=256, padding="masked",
                                window_tokens=[256] * (slots // 64), token_count=256 * slots // 64, source_hash="h")
    memory(64).save(sys.argv[1], dtype="int8")  # the libraries a save loads are not what is measured
    memory = memory(8192)
    states = memory.states
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    memory.save(sys.argv[1], dtype="int8")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024 / (states.numel() * 2))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_saving_int8_needs_little_more_memory_than_a_block(tmp_path):
    extra = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "m.rccmem")], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    # quantising the whole tensor at once needed several float32 copies of it on top
    assert float(extra) < 0.5, f"saving int8 needed {float(extra):.2f}x the states' bytes on top of them"


def test_blockwise_int8_equals_whole_tensor_quantisation(monkeypatch, tmp_path):
    monkeypatch.setattr("rcc_model.memory._BLOCK_BYTES", 3 * 5 * 4 * 2 + 1)  # blocks of 2 slots, one left over
    states = torch.randn(7, 3, 5)
    memory = CompressedMemory(states=states, fingerprint="f", base="b", rate=1, window=7, padding="masked",
                              window_tokens=[7], token_count=7, source_hash="h")
    scales = states.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    loaded = CompressedMemory.load(memory.save(tmp_path / "m.rccmem", dtype="int8"))
    torch.testing.assert_close(loaded.states, torch.round(states / scales).to(torch.int8).float() * scales)


@pytest.mark.parametrize("dtype", [None, "int8", "float16", "bfloat16"])
def test_memory_files_are_written_byte_for_byte_as_safetensors_writes_them(dtype):
    import safetensors.torch

    states = torch.randn(9, 3, 8)
    memory = CompressedMemory(states=states, fingerprint="f", base="b", rate=4, window=16, padding="masked",
                              window_tokens=[16, 16, 4], token_count=36, source_hash="h")
    storage, scales, metadata = memory._serialisable(dtype)
    tensors = {"states": states.to(storage)} if scales is None else \
        {"states": torch.round(states / scales).to(torch.int8), "scales": scales}
    written = memory.to_bytes(dtype)
    (length,) = struct.unpack("<Q", written[:8])
    checksum = json.loads(written[8:8 + length])["__metadata__"]["rcc_sha256"]  # filled in as the data passes
    reference = safetensors.torch.save(tensors, {**metadata, "rcc_sha256": checksum})
    # the same header (safetensors orders metadata keys at random: compared as JSON), lengths and data
    assert written[:8] == reference[:8] and written[8 + length:] == reference[8 + length:]
    assert json.loads(written[8:8 + length]) == json.loads(reference[8:8 + length])
