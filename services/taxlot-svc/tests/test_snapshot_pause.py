"""The snapshot loop's pause between polls: eager while requests come, resting when idle."""

from itertools import pairwise

from taxlot_svc.snapshots import BATCH, IDLE_MAX_S, IDLE_S, next_pause


def test_full_batches_poll_again_at_once():
    assert next_pause(BATCH, IDLE_MAX_S) == 0.0


def test_requests_keep_the_short_pause():
    assert next_pause(1, IDLE_MAX_S) == IDLE_S
    assert next_pause(BATCH - 1, 0.0) == IDLE_S


def test_an_idle_loop_doubles_its_pause_up_to_the_maximum():
    pauses = [0.0]
    for _ in range(8):
        pauses.append(next_pause(0, pauses[-1]))
    assert pauses[1] == IDLE_S
    assert all(b == min(a * 2, IDLE_MAX_S) for a, b in pairwise(pauses[1:]))
    assert pauses[-1] == IDLE_MAX_S
