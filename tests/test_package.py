"""Files -> reproducible .tar.gz: properties of the digest, the archive member by member, and
extraction by GNU tar, Python's tarfile and flytekit's own fast-execute code."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from fastreg_magic.collect import FileSet, ShippedFile, files_to_ship, module_from_cell
from fastreg_magic.errors import PackageError
from fastreg_magic.package import build_archive, digest_files

TREE = {
    "app/__init__.py": b"",
    "app/core.py": b"def f():\n    return 41 + 1\n",
    "app/data/table.csv": b"a,b\n1,2\n" * 1000,
    "bin/run.sh": b"#!/bin/sh\necho hi\n",
    "deep/" + "n" * 120 + "/x.py": b"LONG = True\n",  # > 100 chars: needs a pax header
    "unicodé/naïve.py": "S = 'é'\n".encode(),
    "empty.txt": b"",
}
CELL = "from app.core import f\n\ndef main():\n    return f()\n"


def write_tree(root: Path, tree: dict[str, bytes] = TREE) -> Path:
    for relpath, data in tree.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "bin/run.sh").chmod(0o755)
    return root


def fileset_of(root: Path, copy: str = "all") -> FileSet:
    return files_to_ship(module_from_cell(CELL, "flow", {}), root, copy=copy)


@pytest.fixture(autouse=True)
def own_cache_home(tmp_path, monkeypatch):
    """The default cache dir (platformdirs) under this test's tmp dir, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def project(tmp_path) -> Path:
    return write_tree(tmp_path / "proj")


@pytest.fixture
def settled_project(project) -> Path:
    """A tree whose files were last changed more than two seconds ago: only then are their
    hashes remembered (a file changed within the last two seconds may change again unseen)."""
    time.sleep(2.1)
    return project


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


# --- the digest ----------------------------------------------------------------------------


def test_ten_calls_one_digest(project, cache):
    digests = {digest_files(fileset_of(project)) for _ in range(10)}
    archives = {build_archive(fileset_of(project), cache_dir=cache).digest for _ in range(10)}
    assert len(digests) == 1 and digests == archives


def test_an_edit_changes_the_digest_even_with_same_size_and_mtime(settled_project):
    project = settled_project
    target = project / "app/core.py"
    before = digest_files(fileset_of(project))  # hashes remembered from here on
    st = target.stat()
    target.write_bytes(target.read_bytes().replace(b"41", b"40"))  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    assert digest_files(fileset_of(project)) != before


def test_excluding_a_file_equals_deleting_it(tmp_path):
    ignored = write_tree(tmp_path / "ignored")
    (ignored / "app/data/table.csv").unlink()
    (ignored / "app/data/table.csv").write_bytes(b"other")
    (ignored / ".flyteignore").write_text("app/data/\n")
    deleted = write_tree(tmp_path / "deleted")
    shutil.rmtree(deleted / "app/data")
    (deleted / ".flyteignore").write_text("app/data/\n")
    assert digest_files(fileset_of(ignored)) == digest_files(fileset_of(deleted))


def test_digest_ignores_root_path_mtimes_and_compressor(tmp_path, project, cache):
    digest = digest_files(fileset_of(project))
    # Same files elsewhere, all with other timestamps.
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(project, moved)
    for path in moved.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    assert digest_files(fileset_of(moved)) == digest
    # Same files unpacked from an archive that GNU tar compressed at another level.
    tar_gz = tmp_path / "by-gnu-tar.tar.gz"
    subprocess.run(["tar", "-cf", str(tar_gz), "--use-compress-program", "gzip -1", "-C", str(project), "."], check=True)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(tar_gz), "-C", str(unpacked)], check=True)
    assert digest_files(fileset_of(unpacked)) == digest
    # And the tree unpacked from our own archive.
    ours = tmp_path / "ours"
    ours.mkdir()
    archive = build_archive(fileset_of(project), cache_dir=cache)
    subprocess.run(["tar", "-xzf", str(archive.path), "-C", str(ours)], check=True)
    (ours / "flow.py").unlink()  # generated: it is added again by files_to_ship
    assert digest_files(fileset_of(ours)) == digest == archive.digest


def test_the_executable_bit_counts(project):
    before = digest_files(fileset_of(project))
    (project / "bin/run.sh").chmod(0o644)
    assert digest_files(fileset_of(project)) != before


# --- the archive ---------------------------------------------------------------------------


def test_archive_member_by_member(project, cache):
    fileset = fileset_of(project)
    archive = build_archive(fileset, cache_dir=cache)
    expected = {f.relpath: (f.data if f.data is not None else f.path.read_bytes()) for f in fileset.files}
    assert archive.members == tuple(sorted(expected)) == tuple(f.relpath for f in fileset.files)
    assert archive.path == cache / f"fastreg-{archive.digest}.tar.gz"
    assert archive.size == archive.path.stat().st_size
    with tarfile.open(archive.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(archive.members)
        for member in members:
            assert member.isfile()
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
            assert member.mode == (0o755 if member.name == "bin/run.sh" else 0o644)
            assert tar.extractfile(member).read() == expected[member.name]
    header = archive.path.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\0\0\0\0"  # gzip, mtime 0


def test_same_files_give_byte_identical_archives(tmp_path, project):
    one = build_archive(fileset_of(project), cache_dir=tmp_path / "c1")
    two = build_archive(fileset_of(shutil.copytree(project, tmp_path / "copy")), cache_dir=tmp_path / "c2")
    assert one.path.read_bytes() == two.path.read_bytes()


def test_its_gzip_members_decompress_into_one_tar_stream(project, cache):
    archive = build_archive(fileset_of(project), cache_dir=cache)
    raw = gzip.decompress(archive.path.read_bytes())  # all members, as gzip -d sees them
    assert len(raw) % 512 == 0 and raw.endswith(b"\0" * 1024)
    listing = subprocess.run(["tar", "-tzf", str(archive.path)], check=True, capture_output=True, text=True)
    assert listing.stdout.splitlines() == list(archive.members)


def test_gnu_tar_extracts_it(tmp_path, project, cache):
    archive = build_archive(fileset_of(project), cache_dir=cache)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive.path), "-C", str(out)], check=True)
    for relpath, data in TREE.items():
        assert (out / relpath).read_bytes() == data
    assert os.access(out / "bin/run.sh", os.X_OK)


def test_flytekits_download_distribution_unpacks_it(tmp_path, project, cache):
    from flytekit.tools.fast_registration import download_distribution

    archive = build_archive(fileset_of(project), cache_dir=cache)
    dest = tmp_path / "dest"
    dest.mkdir()
    download_distribution(archive.path.as_uri(), str(dest))
    assert (dest / "app/core.py").read_bytes() == TREE["app/core.py"]
    assert (dest / "flow.py").read_text() == CELL


def test_pyflyte_fast_execute_runs_code_from_it(tmp_path, project, cache):
    archive = build_archive(fileset_of(project), cache_dir=cache)
    dest = tmp_path / "dest"
    dest.mkdir()
    pyflyte = Path(sys.executable).parent / "pyflyte-fast-execute"
    result = subprocess.run(
        [str(pyflyte), "--additional-distribution", archive.path.as_uri(), "--dest-dir", str(dest), "--",
         sys.executable, "-c", "import flow; print(flow.main())"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "42"


def test_an_unchanged_tree_reuses_the_archive(project, cache):
    first = build_archive(fileset_of(project), cache_dir=cache)
    stamp = first.path.stat().st_mtime_ns
    second = build_archive(fileset_of(project), cache_dir=cache)
    assert second == first and second.path.stat().st_mtime_ns == stamp


def test_a_rebuild_after_one_edit_compresses_only_that_file(project, cache):
    build_archive(fileset_of(project), cache_dir=cache)
    entries_before = set((cache / "entries").rglob("*.gz"))
    (project / "app/core.py").write_text("def f():\n    return 7\n")
    rebuilt = build_archive(fileset_of(project), cache_dir=cache)
    new_entries = set((cache / "entries").rglob("*.gz")) - entries_before
    assert len(new_entries) == 1
    with tarfile.open(rebuilt.path) as tar:
        assert tar.extractfile("app/core.py").read() == b"def f():\n    return 7\n"


def test_the_cache_keeps_only_the_newest_archives(project, cache, monkeypatch):
    from fastreg_magic import package_cache

    monkeypatch.setattr(package_cache, "KEEP_ARCHIVES", 3)
    package_cache.forget()
    built = []
    for n in range(20):
        (project / "app/core.py").write_text(f"def f():\n    return {n}\n")
        built.append(build_archive(fileset_of(project), cache_dir=cache).path)
        os.utime(built[-1], ns=(n * 10**9, n * 10**9))  # one second apart, in build order
    kept = set(cache.glob("fastreg-*.tar.gz"))
    assert built[-1] in kept and built[0] not in kept
    assert len(kept) <= 3 + package_cache._PRUNE_ARCHIVES_EVERY


def test_an_archive_built_from_a_measurement_holds_the_measured_content(project, cache):
    from fastreg_magic import package_cache
    from fastreg_magic.package import measure

    fileset = fileset_of(project)
    measured = measure(fileset, cache_dir=cache)
    (project / "app/core.py").write_text("def f():\n    return 0\n")  # edited after measuring
    package_cache.forget()  # nothing compressed yet: the edited file must be read again
    with pytest.raises(PackageError, match="app/core.py changed while it was being packaged"):
        build_archive(fileset, cache_dir=cache, measured=measured)
    (project / "app/core.py").write_bytes(TREE["app/core.py"])
    archive = build_archive(fileset, cache_dir=cache, measured=measured)
    assert archive.digest == measured.digest
    with tarfile.open(archive.path) as tar:
        assert tar.extractfile("app/core.py").read() == TREE["app/core.py"]


# --- refusals ------------------------------------------------------------------------------


def test_an_empty_file_set_is_refused(tmp_path, cache):
    with pytest.raises(PackageError, match="nothing to package"):
        build_archive(FileSet(root=tmp_path, files=(), left_out=(), warnings=()), cache_dir=cache)


def test_an_archive_over_the_limit_names_the_largest_files_the_limit_and_the_knob(tmp_path, cache):
    root = tmp_path / "big"
    root.mkdir()
    (root / "noise.bin").write_bytes(os.urandom(300_000))
    (root / "more.bin").write_bytes(os.urandom(200_000))
    (root / "small.py").write_text("x = 1\n")
    (root / "app").mkdir()
    (root / "app" / "core.py").write_text("def f():\n    return 1\n")  # what the cell imports
    with pytest.raises(PackageError) as caught:
        build_archive(fileset_of(root), cache_dir=cache, max_bytes=400_000)
    message = str(caught.value)
    assert "over the 0.4 MiB limit" in message
    assert message.index("noise.bin (0.3 MiB)") < message.index("more.bin (0.2 MiB)")
    assert "max_archive_mib" in message and ".flyteignore" in message
    assert not list(cache.glob("fastreg-*.tar.gz"))
    # Built under a higher limit, the same files are still refused under the lower one.
    build_archive(fileset_of(root), cache_dir=cache, max_bytes=10_000_000)
    with pytest.raises(PackageError, match="over the 0.4 MiB limit"):
        build_archive(fileset_of(root), cache_dir=cache, max_bytes=400_000)


@pytest.mark.parametrize("relpath", ["../escape.py", "/abs.py", "a//b.py", "a/./b.py"])
def test_paths_that_could_escape_the_archive_are_refused(tmp_path, cache, relpath):
    fileset = FileSet(root=tmp_path, files=(ShippedFile(relpath, data=b"x"),), left_out=(), warnings=())
    with pytest.raises(PackageError, match="not a plain relative path"):
        build_archive(fileset, cache_dir=cache)


def test_an_unreadable_file_is_named(tmp_path, cache):
    (tmp_path / "made_a_folder.py").mkdir()  # listed as a file, then replaced by a folder
    fileset = FileSet(root=tmp_path, files=(ShippedFile("made_a_folder.py", path=tmp_path / "made_a_folder.py"),),
                      left_out=(), warnings=())
    with pytest.raises(PackageError, match="made_a_folder.py cannot be read"):
        build_archive(fileset, cache_dir=cache)


def test_a_file_removed_after_it_was_listed_is_not_shipped_as_if_it_never_was(project, cache):
    from fastreg_magic.package import measure

    (project / "results.db-journal").write_bytes(b"a transaction in progress")
    fileset = fileset_of(project)
    assert "results.db-journal" in {f.relpath for f in fileset.files}
    (project / "results.db-journal").unlink()  # SQLite is done with it before the folder is packaged
    measured = measure(fileset, cache_dir=cache)
    archive = build_archive(fileset, cache_dir=cache, measured=measured)
    assert "results.db-journal" not in archive.members and "app/core.py" in archive.members
    assert archive.digest == measured.digest == digest_files(fileset_of(project))
    assert build_archive(fileset, cache_dir=cache).digest == archive.digest  # without the measurement too


def test_the_default_cache_dir_remembers_hashes_for_the_next_process(tmp_path, settled_project):
    import platformdirs

    from fastreg_magic import package

    project = settled_project
    digest = digest_files(fileset_of(project))
    index = Path(platformdirs.user_cache_dir("fastreg")) / "archives" / "file-hashes.json"
    assert str(tmp_path) in str(index)
    remembered = json.loads(index.read_text())["files"][str(project / "app/core.py")]
    assert remembered[-1] == hashlib.sha256(TREE["app/core.py"]).hexdigest()
    package.forget()  # as a new process
    assert digest_files(fileset_of(project)) == digest


def test_digest_is_over_paths_and_contents_only(tmp_path):
    """The documented formula, so other tools can recompute it."""
    files = (ShippedFile("b.py", data=b"B"), ShippedFile("a.py", data=b"A"))
    fileset = FileSet(root=tmp_path, files=files, left_out=(), warnings=())
    expected = hashlib.sha256(b"fastreg-archive-v1\0")
    for name, data in (("a.py", b"A"), ("b.py", b"B")):
        expected.update(f"{name}\0-\0".encode() + hashlib.sha256(data).digest())
    assert digest_files(fileset) == expected.hexdigest()


def test_a_file_name_that_is_not_utf8_ships_under_its_own_bytes(tmp_path, cache):
    """A Latin-1 name (``caf\\xe9.csv``) from another system: the archive holds it byte for byte, GNU tar
    unpacks it under that name, and the digest is over those bytes (the same in a second process)."""
    project = write_tree(tmp_path / "project")
    raw_name = b"caf\xe9.csv"
    with open(os.path.join(os.fsencode(project), raw_name), "wb") as handle:
        handle.write(b"latte,1\n")
    fileset = fileset_of(project)
    archive = build_archive(fileset, cache_dir=cache)
    assert os.fsdecode(raw_name) in archive.members
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(archive.path), "-C", str(unpacked)], check=True)
    assert open(os.path.join(os.fsencode(unpacked), raw_name), "rb").read() == b"latte,1\n"
    in_a_new_process = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from fastreg_magic import collect, package; "
         "m = collect.module_from_cell(sys.argv[2], 'flow', {}); "
         "print(package.digest_files(collect.files_to_ship(m, Path(sys.argv[1]), copy='all'), cache_dir=Path(sys.argv[3])))",
         str(project), CELL, str(tmp_path / "other-cache")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert in_a_new_process == archive.digest == digest_files(fileset_of(unpacked))


# --- big files -----------------------------------------------------------------------------


def sparse_file(path: Path, size: int) -> None:
    """A file of ``size`` zero bytes that takes no disk (a hole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def bytes_read_by_this_process() -> int:
    """What the kernel counted this process reading (``rchar``): a file read for hashing shows
    here in full, a file only stat'ed does not."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
@pytest.mark.parametrize("run", ["--dry-run", "--endpoint 127.0.0.1:1"])  # refused before any backend is asked
def test_a_hopeless_archive_is_refused_from_the_sizes_before_any_file_is_read(tmp_path, run):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    root = write_tree(tmp_path / "proj")
    sparse_file(root / "data" / "big.bin", 2 * 1024**3)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fastreg_magic")
    before = bytes_read_by_this_process()
    with pytest.raises(UsageError, match=r"The archive would be 2048.0 MiB \(uncompressed\), over the 100.0 MiB "
                                         r"limit. Largest: data/big.bin \(2048.0 MiB\)\. "):
        shell.run_cell_magic("flyte_fast", f"-m bigdata {run} --source-root {root} --copy all",
                             "from flytekit import task\n\n@task\ndef t(x: int) -> int:\n    return x\n")
    assert bytes_read_by_this_process() - before < 256 * 1024**2  # the 2 GiB file was never read


def test_a_big_file_is_hashed_and_compressed_a_chunk_at_a_time(tmp_path):
    """A 384 MiB file under a 200 MiB limit (it compresses well, so it is packed): the process never
    holds it whole. Measured in a process of its own, as the peak of what Python allocated (tracemalloc,
    every thread): the child's peak resident size (ru_maxrss) counts the test process's own pages, shared
    with it when it was forked, and so grows with whatever ran before in the session."""
    root = write_tree(tmp_path / "proj")
    sparse_file(root / "zeros.bin", 384 * 1024**2)
    script = (
        "import sys, tracemalloc; from pathlib import Path; from fastreg_magic import collect, package\n"
        "files = collect.files_to_ship(collect.module_from_cell(sys.argv[2], 'flow', {}), Path(sys.argv[1]), copy='all')\n"
        "tracemalloc.start()\n"
        "measured = package.measure(files, cache_dir=Path(sys.argv[3]), max_bytes=200 * 1024**2)\n"
        "archive = package.build_archive(files, cache_dir=Path(sys.argv[3]), max_bytes=200 * 1024**2, measured=measured)\n"
        "print(archive.path, tracemalloc.get_traced_memory()[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(root), CELL, str(tmp_path / "cache")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    archive_path, peak = done.stdout.split()
    assert int(peak) < 96 * 1024**2, f"peak memory {int(peak) / 1024**2:.0f} MiB for a 384 MiB file"
    with tarfile.open(archive_path) as tar:
        member = tar.getmember("zeros.bin")
        assert member.size == 384 * 1024**2
        assert hashlib.sha256(tar.extractfile(member).read()).digest() == hashlib.sha256(bytes(384 * 1024**2)).digest()


def test_a_big_file_that_compresses_past_the_limit_on_its_own_is_named(tmp_path, cache):
    root = write_tree(tmp_path / "proj")
    (root / "noise.bin").write_bytes(os.urandom(3 * 1024**2))  # a few MiB that do not compress
    with pytest.raises(PackageError, match=r"The archive would be over the 1.0 MiB limit: noise.bin alone compresses "
                                           r"to more. Largest: noise.bin \(3.0 MiB\)\."):
        build_archive(fileset_of(root), cache_dir=cache, max_bytes=1024**2)


def test_the_largest_files_listed_are_the_ones_that_make_up_the_size(tmp_path, cache):
    """Never padded with files that show as 0.0 MiB; and when no file stands out, it says so."""
    root = write_tree(tmp_path / "proj")
    (root / "noise.bin").write_bytes(os.urandom(300_000))
    with pytest.raises(PackageError) as caught:
        build_archive(fileset_of(root), cache_dir=cache, max_bytes=200_000)
    assert "Largest: noise.bin (0.3 MiB)." in str(caught.value)
    assert "0.0 MiB" not in str(caught.value)
    many = write_tree(tmp_path / "many")
    for i in range(40):
        (many / f"part{i:02}.bin").write_bytes(os.urandom(20_000))
    with pytest.raises(PackageError) as caught:
        build_archive(fileset_of(many), cache_dir=cache, max_bytes=200_000)
    assert "It is 48 files, each under 0.1 MiB." in str(caught.value)
    assert "0.0 MiB" not in str(caught.value)
