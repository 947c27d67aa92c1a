"""run_ahead: items in order from a thread a bounded number ahead; errors where they happen;
a consumer that stops early stops the producer."""

import threading
import time

import pytest

from spectral_training.cubes.run_ahead import run_ahead


def test_items_come_in_order_and_an_error_comes_where_it_was_raised():
    def items():
        yield from range(3)
        raise ValueError("item 3 is broken")

    got = []
    with pytest.raises(ValueError, match="item 3 is broken"):
        for item in run_ahead(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2]


def test_the_producer_runs_at_most_depth_items_ahead():
    made = []

    def items():
        for i in range(20):
            made.append(i)
            yield i

    ahead = []
    for item in run_ahead(items(), depth=2):
        time.sleep(0.01)  # a slow consumer: the producer would run to the end if unbounded
        ahead.append(len(made) - (item + 1))
    # depth items wait in the hand-off, one more is being made while the producer waits for room
    assert max(ahead) <= 3 and len(made) == 20


@pytest.mark.parametrize("how", ["break", "raise"])
def test_a_consumer_that_stops_early_stops_and_closes_the_producer(how):
    closed = threading.Event()

    def items():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.set()

    if how == "break":
        for item in run_ahead(items(), depth=2, name="stops-early"):
            if item == 3:
                break
    else:
        with pytest.raises(RuntimeError):
            for item in run_ahead(items(), depth=2, name="stops-early"):
                if item == 3:
                    raise RuntimeError("the store is full")
    import gc

    gc.collect()  # a generator left by `break` is closed when collected
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while any(t.name == "stops-early" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "stops-early" for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        next(run_ahead(iter([1]), depth=0))
