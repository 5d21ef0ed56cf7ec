from __future__ import annotations

from shared.envelope import H_ATTEMPT, H_ORIGIN, H_POSSIBLE_DUPLICATE, H_SITE, H_SITE_ATTEMPT
from shared.topology import Topology, delay_queue, jobs_exchange
from workers.policy import DeliveryState, GiveUp, Retry, after_failure, next_site

TOPOLOGY = Topology(prefix="p", sites=("a", "b"), retry_delays_s=(1, 5, 30))


def _step(
    state: DeliveryState,
    *,
    tried: str = "a",
    failing: bool = False,
    per_site: int = 3,
    max_attempts: int = 12,
):
    return after_failure(
        state,
        tried_site=tried,
        topology=TOPOLOGY,
        attempts_per_site=per_site,
        max_attempts=max_attempts,
        site_failing=failing,
    )


def test_state_round_trips_through_headers_and_tolerates_garbage() -> None:
    state = DeliveryState(attempt=4, site_attempt=1, site="b", origin="a", outage_attempt=2)
    assert DeliveryState.from_headers(state.headers(), queue_site="a") == state
    fresh = DeliveryState.from_headers(None, queue_site="a")
    assert fresh == DeliveryState(attempt=0, site_attempt=0, site="a", origin="a")
    odd = DeliveryState.from_headers(
        {H_ATTEMPT: b"3", H_SITE_ATTEMPT: "x", H_SITE: b"b", H_ORIGIN: None}, queue_site="a"
    )
    assert odd == DeliveryState(attempt=3, site_attempt=0, site="b", origin="b")


def test_retry_at_same_site_goes_through_delay_tier_of_the_attempt() -> None:
    step = _step(DeliveryState(attempt=0, site_attempt=0, site="a", origin="a"))
    assert isinstance(step, Retry)
    assert step.state == DeliveryState(attempt=1, site_attempt=1, site="a", origin="a")
    assert (step.exchange, step.routing_key) == ("", delay_queue("p", "a", 1))
    assert step.delayed and not step.switched_site
    second = _step(step.state)
    assert isinstance(second, Retry)
    assert second.routing_key == delay_queue("p", "a", 5)


def test_switches_site_after_attempts_per_site_with_site_count_reset() -> None:
    step = _step(DeliveryState(attempt=2, site_attempt=2, site="a", origin="a"))
    assert isinstance(step, Retry)
    assert step.state == DeliveryState(attempt=3, site_attempt=0, site="b", origin="a")
    assert step.switched_site and step.delayed
    assert step.routing_key == delay_queue("p", "b", 30)
    # Beyond the last tier the last one is used.
    later = _step(DeliveryState(attempt=6, site_attempt=0, site="b", origin="a"), tried="b")
    assert isinstance(later, Retry)
    assert later.routing_key == delay_queue("p", "b", 30)


def test_failing_site_hands_job_straight_to_next_site_queue() -> None:
    step = _step(DeliveryState(attempt=0, site_attempt=0, site="a", origin="a"), failing=True)
    assert isinstance(step, Retry)
    assert (step.exchange, step.routing_key) == (jobs_exchange("p"), "b")
    assert step.state == DeliveryState(attempt=1, site_attempt=0, site="b", origin="a", outage_attempt=1)
    assert step.switched_site and not step.delayed


def test_job_taken_on_standby_counts_at_the_site_that_tried_it() -> None:
    # A job of site a's queue, tried by a worker of site b (standby): b's first attempt at b.
    step = _step(DeliveryState(attempt=2, site_attempt=2, site="a", origin="a"), tried="b")
    assert isinstance(step, Retry)
    assert step.state == DeliveryState(attempt=3, site_attempt=1, site="b", origin="a")
    assert step.routing_key == delay_queue("p", "b", 30)


def test_gives_up_after_max_attempts() -> None:
    step = _step(DeliveryState(attempt=11, site_attempt=1, site="a", origin="a"), max_attempts=12)
    assert step == GiveUp(attempts=12)
    assert isinstance(_step(DeliveryState(attempt=10, site_attempt=0, site="a", origin="a")), Retry)


def test_single_site_never_switches() -> None:
    one = Topology(prefix="p", sites=("a",), retry_delays_s=(1,))
    step = after_failure(
        DeliveryState(attempt=5, site_attempt=5, site="a", origin="a"),
        tried_site="a",
        topology=one,
        attempts_per_site=1,
        max_attempts=12,
        site_failing=True,
    )
    assert isinstance(step, Retry)
    assert step.routing_key == delay_queue("p", "a", 1) and not step.switched_site


def test_next_site_wraps_in_sorted_order() -> None:
    assert next_site(["c", "a", "b"], "a") == "b"
    assert next_site(["c", "a", "b"], "c") == "a"
    assert next_site(["a", "b"], "zz") == "a"


def test_attempts_during_an_outage_never_exhaust_a_job() -> None:
    # Both sites down for long: every attempt fails with the breaker open. The history grows, the count
    # towards max_attempts does not; validity, not attempts, ends such a job.
    state = DeliveryState(attempt=0, site_attempt=0, site="a", origin="a")
    tried = "a"
    for _ in range(50):
        step = _step(state, tried=tried, failing=True, max_attempts=4)
        assert isinstance(step, Retry)
        state, tried = step.state, step.state.site
    assert state.attempt == 50 and state.counted_attempts == 0
    # Per-message failures at a healthy site still count, on top of the outage's attempts.
    for _ in range(3):
        step = _step(state, tried=tried, max_attempts=4, per_site=100)
        assert isinstance(step, Retry)
        state = step.state
    assert state.counted_attempts == 3
    assert _step(state, tried=tried, max_attempts=4, per_site=100) == GiveUp(attempts=54)


def test_a_possible_duplicate_comes_from_a_redelivery_or_the_header_and_travels_with_every_retry() -> None:
    plain = DeliveryState.from_headers({H_ATTEMPT: 1}, queue_site="a")
    assert not plain.possible_duplicate and H_POSSIBLE_DUPLICATE not in plain.headers()
    assert DeliveryState.from_headers({H_ATTEMPT: 1}, queue_site="a", redelivered=True).possible_duplicate
    for value in (True, 1, "1", "true", b"yes"):
        assert DeliveryState.from_headers({H_POSSIBLE_DUPLICATE: value}, queue_site="a").possible_duplicate
    for value in (False, 0, "0", "false", b"", None):
        assert not DeliveryState.from_headers(
            {H_POSSIBLE_DUPLICATE: value}, queue_site="a"
        ).possible_duplicate
    marked = DeliveryState(attempt=0, site_attempt=0, site="a", origin="a", possible_duplicate=True)
    assert DeliveryState.from_headers(marked.headers(), queue_site="a") == marked
    for failing in (False, True):
        step = _step(marked, failing=failing)
        assert isinstance(step, Retry) and step.state.headers()[H_POSSIBLE_DUPLICATE] is True
