"""The pure PaymentIntent transition table (payments/state.py) against a table written out here.

The expected table is taken from the seed 004 diagram plus paymux's additions, not read back from TRANSITIONS:

    requires_payment_method --> requires_action --> processing --> succeeded
              |                       |                 |
              +-----------------------+-----------------+--> failed
              |                       |
              +-----------------------+------------------> cancelled

plus `requires_capture` (external/manual intents: confirm hands them to the terminal, capture records the result
as succeeded, failed or cancelled; capture may also come straight from requires_payment_method), and
requires_payment_method -> processing (a card confirm that needs no customer action).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paymux.payments.state import (
    TERMINAL,
    TRANSITIONS,
    PaymentStatus,
    can_transition,
    event_type_for,
    is_terminal,
)

S = PaymentStatus

ALL_STATUS_VALUES = {
    "requires_payment_method",
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "failed",
    "cancelled",
}

#: The seed 004 diagram, edge by edge.
SEED_EDGES: frozenset[tuple[PaymentStatus, PaymentStatus]] = frozenset(
    {
        (S.REQUIRES_PAYMENT_METHOD, S.REQUIRES_ACTION),
        (S.REQUIRES_ACTION, S.PROCESSING),
        (S.PROCESSING, S.SUCCEEDED),
        (S.REQUIRES_PAYMENT_METHOD, S.FAILED),
        (S.REQUIRES_ACTION, S.FAILED),
        (S.PROCESSING, S.FAILED),
        (S.REQUIRES_PAYMENT_METHOD, S.CANCELLED),
        (S.REQUIRES_ACTION, S.CANCELLED),
    }
)

#: paymux's additions: requires_capture, capture straight from requires_payment_method, a direct card confirm.
PAYMUX_EDGES: frozenset[tuple[PaymentStatus, PaymentStatus]] = frozenset(
    {
        (S.REQUIRES_PAYMENT_METHOD, S.PROCESSING),
        (S.REQUIRES_PAYMENT_METHOD, S.REQUIRES_CAPTURE),
        (S.REQUIRES_PAYMENT_METHOD, S.SUCCEEDED),
        (S.REQUIRES_CAPTURE, S.SUCCEEDED),
        (S.REQUIRES_CAPTURE, S.FAILED),
        (S.REQUIRES_CAPTURE, S.CANCELLED),
    }
)

EXPECTED_EDGES = SEED_EDGES | PAYMUX_EDGES
EXPECTED_TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
ALL_PAIRS = list(itertools.product(list(S), repeat=2))


def test_the_statuses_are_exactly_those_of_the_seed_plus_requires_capture() -> None:
    assert {status.value for status in S} == ALL_STATUS_VALUES
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(
    ("current", "target"), ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS]
)
def test_a_transition_is_allowed_exactly_when_the_table_lists_it(
    current: PaymentStatus, target: PaymentStatus
) -> None:
    expected = (current, target) in EXPECTED_EDGES
    assert can_transition(current, target) is expected
    assert (target in TRANSITIONS[current]) is expected


def test_the_table_has_no_edge_beyond_the_expected_ones() -> None:
    actual = {(current, target) for current, targets in TRANSITIONS.items() for target in targets}
    assert actual == EXPECTED_EDGES


@pytest.mark.parametrize(("current", "target"), sorted(SEED_EDGES))
def test_every_edge_of_the_seed_diagram_is_present(current: PaymentStatus, target: PaymentStatus) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize("status", list(S))
def test_terminal_states_have_no_exits(status: PaymentStatus) -> None:
    terminal = status in EXPECTED_TERMINAL
    assert is_terminal(status) is terminal
    assert (status in TERMINAL) is terminal
    exits = [target for target in S if can_transition(status, target)]
    if terminal:
        assert exits == []
    else:
        assert exits, f"{status} is not terminal, so something must follow it"


def test_terminal_is_exactly_succeeded_failed_cancelled() -> None:
    assert frozenset(TERMINAL) == EXPECTED_TERMINAL


@pytest.mark.parametrize("status", list(S))
def test_no_status_transitions_to_itself(status: PaymentStatus) -> None:
    assert not can_transition(status, status)


@pytest.mark.parametrize("status", list(S))
def test_nothing_returns_to_requires_payment_method(status: PaymentStatus) -> None:
    assert not can_transition(status, S.REQUIRES_PAYMENT_METHOD)


def _reachable(start: PaymentStatus) -> set[PaymentStatus]:
    seen = {start}
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for target in S:
            if can_transition(current, target) and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_status_is_reachable_from_requires_payment_method() -> None:
    assert _reachable(S.REQUIRES_PAYMENT_METHOD) == set(S)


@pytest.mark.parametrize("status", [status for status in S if status not in EXPECTED_TERMINAL])
def test_every_open_status_can_still_end(status: PaymentStatus) -> None:
    assert _reachable(status) & EXPECTED_TERMINAL


@pytest.mark.parametrize("status", list(S))
def test_event_type_names_the_target_status(status: PaymentStatus) -> None:
    assert event_type_for(status) == "payment_intent." + status.value


@settings(database=None, max_examples=300)
@given(data=st.data(), start=st.sampled_from(list(S)))
def test_random_walks_over_allowed_transitions_end_in_a_terminal_state(
    data: st.DataObject, start: PaymentStatus
) -> None:
    current = start
    visited = [current]
    while not is_terminal(current):
        options = [target for target in S if can_transition(current, target)]
        assert options, f"{current} is open but has no way out"
        target = data.draw(st.sampled_from(options))
        assert (current, target) in EXPECTED_EDGES
        assert event_type_for(target) == f"payment_intent.{target.value}"
        assert target not in visited, "the machine has no cycles: a status is never revisited"
        visited.append(target)
        current = target
        assert len(visited) <= len(S)
    assert current in EXPECTED_TERMINAL
    assert not any(can_transition(current, target) for target in S)


@settings(database=None, max_examples=300)
@given(start=st.sampled_from(list(S)), attempts=st.lists(st.sampled_from(list(S)), max_size=40))
def test_applying_only_allowed_transitions_never_leaves_a_terminal_state(
    start: PaymentStatus, attempts: list[PaymentStatus]
) -> None:
    current = start
    ended_in: PaymentStatus | None = current if current in EXPECTED_TERMINAL else None
    for target in attempts:
        allowed = can_transition(current, target)
        assert allowed is ((current, target) in EXPECTED_EDGES)
        if allowed:
            assert ended_in is None, f"left terminal {ended_in} for {target}"
            assert event_type_for(target) == f"payment_intent.{target.value}"
            current = target
        if current in EXPECTED_TERMINAL:
            ended_in = current
    if ended_in is not None:
        assert current == ended_in
