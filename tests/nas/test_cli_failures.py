"""Clean failures of the ``hwnas`` CLI: Ctrl-C, corrupt databases, read-only and full disks.

Each failure must end in one line naming the path (exit 2) or the interrupt line
(exit 130), never a traceback.  Subprocesses are bounded and killed by pid."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from nas.cli import main
from tests.conftest import REPO, tiny_recipe


def _write(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _completed(study_db):
    con = sqlite3.connect(f"file:{study_db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _ctrl_c_as_in_a_terminal():
    # a command started in the background by a non-interactive shell (`cmd &`, as CI scripts
    # do) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # the search would rightly ignore the test's Ctrl-C.  A terminal's foreground command has
    # the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_measured_search_exits_130_with_one_line_and_resumes(tmp_path, processes, monkeypatch):
    recipe = tiny_recipe(tmp_path, search={"controller": "random", "trials": 4, "batch_size": 2})
    path = _write(tmp_path, recipe)
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(path), "--no-progress"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HWNAS_HOME": str(tmp_path / "home")},
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    processes.append(proc)
    study = tmp_path / "run" / "study.db"
    deadline = time.monotonic() + 240
    # the study exists: the search loop (measurement with ONNX Runtime, then training) is running
    while time.monotonic() < deadline and proc.poll() is None and not study.exists():
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    os.kill(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("Ctrl-C was swallowed: the search kept running")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    done = _completed(study)
    assert last == f"interrupted at {done}/4 trials; re-run the same command to resume"
    assert "interrupted at" in (tmp_path / "run" / "run.log").read_text()

    # the same command resumes and finishes
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    assert main(["search", str(path), "--no-progress"]) == 0
    assert _completed(study) == 4


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_corrupt_measurement_store_is_one_line_naming_it(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    (tmp_path / "store.db").write_bytes(b"this is not sqlite" * 100)
    assert main(["search", str(_write(tmp_path, recipe)), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "store.db") in line and "move it aside" in line


def test_corrupt_study_database_is_one_line_naming_it(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "study.db").write_bytes(b"\x00garbage" * 500)
    assert main(["search", str(_write(tmp_path, recipe)), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str((tmp_path / "run" / "study.db").resolve()) in line and "move it aside" in line


def test_corrupt_checkpoint_is_one_line_naming_it(tmp_path, capsys):
    # a truncated model.pt, as a full disk used to leave behind
    import torch

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    bad = tmp_path / "export" / "model.pt"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:500])
    from nas.cli import operational_error

    try:
        torch.load(bad, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises must be classified
        message = operational_error(exc)
    assert message is not None and str(bad) in message and "re-create" in message


def _mount_tmpfs(where, options):
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(name, options):
        where = tmp_path / name
        _mount_tmpfs(where, options)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


def test_read_only_run_folder_is_one_line_naming_it(tmp_path, tmpfs, capsys):
    ro = tmpfs("ro", "ro,size=64k")
    recipe = tiny_recipe(tmp_path, output=str(ro / "run"))
    assert main(["search", str(_write(tmp_path, recipe)), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(ro / "run") in line and "read-only" in line


def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, tmpfs, capsys):
    small = tmpfs("small", "size=64k")
    # fill the file system up to a few hundred bytes: the CSV of 3 rows does not fit
    fd = os.open(small / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    out = small / "m.csv"
    code = main(["-q", "measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "3", "--out", str(out),
                 "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10",
                 "--no-progress"])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left" in line and str(small) in line
    assert sorted(p.name for p in small.iterdir()) == ["filler"]
