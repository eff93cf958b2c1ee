"""Tests for streamload.images.recycle: a batch array is handed out again only once nobody else holds it
(not the array, nor a view, a slice or a memoryview of it), from any number of threads, and a recycler
pickles empty."""

from __future__ import annotations

import pickle
import threading

import numpy as np

from streamload.images.recycle import ArrayRecycler

SHAPE = (3, 5)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_an_array_nobody_holds_is_handed_out_again() -> None:
    recycler = ArrayRecycler()
    first = recycler.empty(8, SHAPE, np.float32)
    address = _address(first)
    del first
    again = recycler.empty(8, SHAPE, np.float32)
    assert _address(again) == address
    smaller = recycler.empty(5, SHAPE, np.float32)  # `again` is held: a new one
    assert _address(smaller) != address and smaller.shape == (5, *SHAPE)
    del again
    assert _address(recycler.empty(6, SHAPE, np.float32)) == address  # a short last batch: a view of a kept one


def test_an_array_still_held_in_any_form_is_never_handed_out() -> None:
    recycler = ArrayRecycler()
    holders = {"array": lambda a: a, "slice": lambda a: a[2:], "view": lambda a: a.reshape(-1),
               "memoryview": memoryview, "transposed": lambda a: a.T, "in a list": lambda a: [a]}
    for name, hold in holders.items():
        array = recycler.empty(8, SHAPE, np.float32)
        array[...] = 7
        kept = hold(array)
        del array
        for _ in range(2 * recycler.kept):
            recycler.empty(8, SHAPE, np.float32)[...] = 0  # each dropped at once, so reused by the next
        assert (np.asarray(kept[0] if name == "in a list" else kept) == 7).all(), name


def test_a_queue_of_batches_longer_than_what_is_kept_stays_intact() -> None:
    recycler = ArrayRecycler(kept=2)
    queue = []
    for number in range(6):
        array = recycler.empty(4, SHAPE, np.int64)
        array[...] = number
        queue.append(array)
    assert [int(array.min()) for array in queue] == [int(array.max()) for array in queue] == list(range(6))
    assert len({_address(array) for array in queue}) == 6


def test_other_shapes_and_dtypes_get_their_own_arrays() -> None:
    recycler = ArrayRecycler()
    first = recycler.empty(4, SHAPE, np.float32)
    address = _address(first)
    del first
    for shape, dtype, count in [((5, 3), np.float32, 4), (SHAPE, np.float64, 4), (SHAPE, np.float32, 9)]:
        other = recycler.empty(count, shape, dtype)
        assert other.shape == (count, *shape) and other.dtype == dtype and _address(other) != address


def test_threads_never_share_an_array() -> None:
    recycler, failures = ArrayRecycler(), []

    def work(number: int) -> None:
        for _ in range(300):
            array = recycler.empty(2, SHAPE, np.int64)
            array[...] = number
            if not (array == number).all():
                failures.append(number)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_pickles_as_an_empty_recycler() -> None:
    recycler = ArrayRecycler(kept=3)
    held = recycler.empty(2, SHAPE, np.float32)
    copy = pickle.loads(pickle.dumps(recycler))
    assert copy.kept == 3 and _address(copy.empty(2, SHAPE, np.float32)) != _address(held)
