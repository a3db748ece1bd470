"""prob.io.atomic_write: the one way every file of ctxdefect is written."""

from __future__ import annotations

import os
import signal
import stat
import time

import numpy as np
import pytest

from prob.io import atomic_write, signals_deferred


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_users_umask(tmp_path, umask_022):
    target = tmp_path / "new.nc"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nc")
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert mode(target) == 0o644
    assert list(tmp_path.iterdir()) == [target]


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "shared.pt"
    target.write_bytes(b"old")
    os.chmod(target, 0o664)
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o664


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_mid_write_leaves_the_old_file_and_no_temp_file(tmp_path, error):
    target = tmp_path / "result.npy"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_np_save_writes_where_it_is_told(tmp_path):
    target = tmp_path / "run.npy"
    with atomic_write(target) as tmp:
        np.save(tmp, np.arange(3))  # would add ".npy" to a name without it
    assert np.load(target).tolist() == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [target]


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler for the test (a runner started with ``nohup … &`` has
    SIGINT ignored), and whatever was there before afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_inside_a_deferred_block_arrives_when_it_ends(tmp_path, ctrl_c):
    """The block runs to its end; the interrupt then escapes and the temporary file goes."""
    reached_end = False
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "a.nc") as tmp:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a handler that raised would have raised by now
            tmp.write_bytes(b"written")
            reached_end = True
    assert reached_end
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    """A command run as a background job (SIGINT ignored) is not interrupted by its write."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with atomic_write(tmp_path / "a.nc") as tmp, signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            tmp.write_bytes(b"written")
        assert (tmp_path / "a.nc").read_bytes() == b"written"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_deferred_block_without_a_signal_changes_nothing(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic_write(tmp_path / "a.nc") as tmp, signals_deferred():
        tmp.write_bytes(b"written")
    assert (tmp_path / "a.nc").read_bytes() == b"written"
    assert signal.getsignal(signal.SIGTERM) is before
