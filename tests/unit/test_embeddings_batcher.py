"""The embedding worker: requests share forward passes, batches stay within bounds, failures stay contained."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.embeddings import (Batcher, BatchSettings, EmbeddingBusy, EmbeddingDown, EmbeddingFailed,
                                EmbeddingTimeout)

from .embedding_fakes import FakeForward, vector_of


def started(forward, **settings) -> Batcher:
    batcher = Batcher(lambda: forward, BatchSettings(**({"collect_window_s": 0.0} | settings)))
    batcher.start(timeout_s=10)
    return batcher


def seq(n: int, start: int = 3) -> list[int]:
    return list(range(start, start + n))


def in_threads(batcher, jobs) -> list:
    results = [None] * len(jobs)

    def run(i, sequences):
        try:
            results[i] = batcher.embed(sequences, timeout_s=30)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    return threads, results


def test_concurrent_requests_share_one_forward_pass():
    gate = threading.Event()
    forward = FakeForward(gate=gate)
    batcher = started(forward)
    first, first_result = in_threads(batcher, [[seq(2)]])
    assert forward.entered.wait(10)  # the worker is inside the first pass, holding the gate
    jobs = [[seq(3, 10 + i)] for i in range(6)]
    threads, results = in_threads(batcher, jobs)
    while batcher.stats()["pending_inputs"] < 7:  # all six are queued behind the gate
        threading.Event().wait(0.01)
    gate.set()
    for t in [*first, *threads]:
        t.join(10)
    assert len(forward.batches) == 2  # six clients, one pass between them
    assert sorted(map(tuple, forward.batches[1])) == sorted(tuple(j[0]) for j in jobs)
    for job, result in zip(jobs, results):
        np.testing.assert_allclose(result, np.stack([vector_of(job[0])]))
    stats = batcher.stats()
    assert stats["requests"] == 7 and stats["forward_passes"] == 2 and stats["peak_batch"] == 6
    assert stats["pending_inputs"] == 0
    batcher.stop()


def test_one_request_is_cut_into_bounded_batches_and_answered_in_order():
    forward = FakeForward()
    batcher = started(forward, max_batch_size=4, max_batch_tokens=24)
    lengths = [5, 1, 9, 2, 2, 7, 3, 1, 4, 6]
    sequences = [seq(n, 3 + i) for i, n in enumerate(lengths)]
    vectors = batcher.embed(sequences)
    np.testing.assert_allclose(vectors, np.stack([vector_of(s) for s in sequences]))
    for batch in forward.batches:
        assert len(batch) <= 4 and len(batch) * max(map(len, batch)) <= 24
    # Shortest first, so a batch pads to little more than its own lengths.
    flat = [len(s) for batch in forward.batches for s in batch]
    assert flat == sorted(lengths)
    assert sum(map(len, forward.batches)) == len(lengths)
    batcher.stop()


def test_a_sequence_longer_than_the_token_budget_still_runs_alone():
    forward = FakeForward()
    batcher = started(forward, max_batch_tokens=8)
    batcher.embed([seq(20), seq(2)])
    assert [len(b) for b in forward.batches] == [1, 1]
    batcher.stop()


def test_a_failed_pass_fails_its_requests_and_the_worker_goes_on():
    forward = FakeForward(fail_when=lambda batch: any(13 in s for s in batch))
    batcher = started(forward)
    with pytest.raises(EmbeddingFailed, match="planted failure"):
        batcher.embed([seq(3, 12)])
    assert batcher.embed([seq(2)]).shape == (1, 4)
    assert batcher.stats()["errors"] == 1 and batcher.stats()["pending_inputs"] == 0
    batcher.stop()


def test_a_request_that_times_out_is_dropped_from_later_batches():
    gate = threading.Event()
    forward = FakeForward(gate=gate)
    batcher = started(forward)
    blocker, _ = in_threads(batcher, [[seq(1)]])
    assert forward.entered.wait(10)
    with pytest.raises(EmbeddingTimeout):
        batcher.embed([seq(4, 50)], timeout_s=0.05)
    gate.set()
    blocker[0].join(10)
    assert batcher.embed([seq(2)]).shape == (1, 4)
    assert all(50 not in s for b in forward.batches for s in b)  # the abandoned input never ran
    assert batcher.stats()["timeouts"] == 1 and batcher.stats()["pending_inputs"] == 0
    batcher.stop()


def test_too_many_waiting_inputs_are_refused():
    gate = threading.Event()
    forward = FakeForward(gate=gate)
    batcher = started(forward, max_pending=4)
    blocker, _ = in_threads(batcher, [[seq(1), seq(1), seq(1)]])
    assert forward.entered.wait(10)
    with pytest.raises(EmbeddingBusy):
        batcher.embed([seq(1), seq(1)])
    gate.set()
    blocker[0].join(10)
    assert batcher.stats()["rejected_busy"] == 1
    batcher.stop()


def test_a_model_that_fails_to_load_fails_start():
    def broken():
        raise ValueError("no such model")

    with pytest.raises(RuntimeError, match="no such model"):
        Batcher(broken).start(timeout_s=10)


def test_a_stopped_worker_takes_no_work():
    batcher = started(FakeForward())
    batcher.stop()
    assert not batcher.alive
    with pytest.raises(EmbeddingDown):
        batcher.embed([seq(1)])
