"""Whole-output writes: a kill at any moment leaves the previous output or the new one, never a
mix, never nothing; leftovers are restored or removed by the next write or load."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sith_lens.atomic import OWNER_FILE, atomic_directory, recover_directory

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sith_lens.atomic import atomic_directory
    rename = Path.rename
    def slow_rename(self, target):  # widen the swap window, so that kills land in it
        result = rename(self, target)
        time.sleep(0.003)
        return result
    Path.rename = slow_rename
    out = Path(sys.argv[1])
    n = 0
    while True:
        n += 1
        with atomic_directory(out) as tmp:
            (tmp / "a.txt").write_text(str(n))
            time.sleep(0.002)
            (tmp / "b.txt").write_text(str(n) * 1000)
""")


def consistent(folder):
    a = (folder / "a.txt").read_text()
    return (folder / "b.txt").read_text() == a * 1000


def test_a_folder_survives_kill_9_at_random_moments(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("0")
        (tmp / "b.txt").write_text("0" * 1000)
    rng = random.Random(0)
    restored = 0
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)])
        time.sleep(rng.uniform(0.3, 0.6))  # start-up, then a few hundred writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        restored += recover_directory(out)
        assert out.is_dir() and consistent(out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.old, no temp folders
    assert int((out / "a.txt").read_text()) > 0  # the writers got through
    assert restored > 0  # some kills landed between the two renames of the swap


def test_the_swap_window_is_recovered_by_a_load(tmp_path, caplog):
    """A kill between the two renames left OUT missing and the previous output hidden in .OUT.old;
    load_clip then went looking for OUT on the hub."""
    import shutil

    import sith_lens as sl

    out = tmp_path / "ckpt"
    sl.load_clip("random:tiny").save_pretrained(out)
    out.rename(tmp_path / ".ckpt.old")  # the state the swap leaves between its two renames
    model = sl.load_clip(str(out))
    assert model.vision.cfg.n_layers == 2 and out.is_dir() and not (tmp_path / ".ckpt.old").exists()
    assert "restored the previous checkpoint" in caplog.text
    # after the swap: both present; the old one goes
    shutil.copytree(out, tmp_path / ".ckpt.old")
    assert recover_directory(out) is False
    assert not (tmp_path / ".ckpt.old").exists()


def test_temp_folders_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / ".out.tmp-dead"
    dead.mkdir()
    (dead / OWNER_FILE).write_text("999999999")  # no such process
    unmarked = tmp_path / ".out.tmp-unmarked"
    unmarked.mkdir()
    live = tmp_path / ".out.tmp-live"
    live.mkdir()
    (live / OWNER_FILE).write_text(str(os.getpid()))
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("1")
        assert (tmp / OWNER_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-live", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["x"]  # the marker does not end up in the output


def test_an_error_inside_leaves_the_previous_output(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "x").write_text("new")
            raise RuntimeError("late failure")
    assert (out / "x").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temp_files_of_killed_file_writers_are_removed_by_the_next_write(tmp_path):
    from sith_lens.atomic import write_text_atomic

    dead = tmp_path / ".r.json.999999999.abcd.tmp"
    live = tmp_path / f".r.json.{os.getpid()}.efgh.tmp"
    other = tmp_path / ".notes.txt.999999999.abcd.tmp"  # another target's: not ours to judge now
    for f in (dead, live, other):
        f.write_text("partial")
    write_text_atomic(tmp_path / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "r.json"])
