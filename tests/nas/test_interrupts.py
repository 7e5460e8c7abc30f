"""A Ctrl-C that Python drops inside a callback still stops the loop at its next check."""
import gc
import signal
import weakref

import pytest

from nas.interrupts import CtrlC


class _Referent:
    pass


# the dropped KeyboardInterrupt is the point of the test
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_dropped_inside_a_weakref_callback_is_raised_at_the_next_check():
    with CtrlC() as ctrl_c:
        ctrl_c.check()  # nothing pending
        handler = signal.getsignal(signal.SIGINT)
        assert handler == ctrl_c._interrupt

        def callback(_):
            # where CPython only prints the KeyboardInterrupt ("Exception ignored in ...")
            handler(signal.SIGINT, None)

        referent = _Referent()
        ref = weakref.ref(referent, callback)
        del referent
        gc.collect()
        assert ref() is None  # the callback ran, and its KeyboardInterrupt did not reach here
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_or_custom_sigint_is_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with CtrlC() as ctrl_c:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            ctrl_c.check()
    finally:
        signal.signal(signal.SIGINT, previous)
