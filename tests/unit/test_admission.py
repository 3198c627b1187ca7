"""We test these aspects of the build slots, through their one entry point `update`:

- without limits every build starts;
- at the operator-wide limit builds wait, with positions first come first served by their `since`;
- a freed slot goes to the earliest waiter, not to whoever asks first, and the answer that frees it
  names the waiters that may start now;
- a namespace at its own limit does not hold up builds of other namespaces;
- asking again for an admitted Job is idempotent; a new Job of the same ServiceBuild (a new build)
  takes the old one's place; running builds found at start-up count;
- a ServiceBuild that went idle or is gone leaves the queue and frees its slot.
"""

from datetime import UTC, datetime, timedelta

from servicebuild.admission import BuildSlots, Idle, Running, Waiting

T1 = datetime(2026, 11, 28, 10, 0, 1, tzinfo=UTC)
T2, T3 = T1 + timedelta(seconds=1), T1 + timedelta(seconds=2)


def test_no_limits_admit_everything() -> None:
    slots = BuildSlots()
    assert all(slots.update(("shop", f"b{i}"), Waiting(f"b{i}-1-x", T1)).admitted for i in range(50))


def test_operator_limit_queues_first_come_first_served() -> None:
    slots = BuildSlots(max_running=1)
    assert slots.update(("shop", "a"), Waiting("a-1", T1)).admitted
    assert slots.update(("shop", "c"), Waiting("c-1", T3)).position == 1
    earlier = slots.update(("shop", "b"), Waiting("b-1", T2))
    later = slots.update(("shop", "c"), Waiting("c-1", T3))
    assert (later.admitted, later.position) == (False, 2), "an earlier waiter moves ahead"
    assert (earlier.admitted, earlier.position) == (False, 1)
    assert "SERVICEBUILD_MAX_RUNNING_BUILDS" in earlier.reason

    assert slots.update(("shop", "a"), Idle()).wake == (("shop", "b"),)
    assert not slots.update(("shop", "c"), Waiting("c-1", T3)).admitted, "the earlier waiter gets the slot"
    assert slots.update(("shop", "b"), Waiting("b-1", T2)).admitted
    assert slots.update(("shop", "b"), Waiting("b-1", T2)).admitted, "asking again for a started Job is fine"
    assert slots.update(("shop", "c"), Waiting("c-1", T3)).position == 1


def test_namespace_limit_does_not_block_other_namespaces() -> None:
    slots = BuildSlots(max_running=3, max_running_per_namespace=1)
    assert slots.update(("shop", "a"), Waiting("a-1", T1)).admitted
    blocked = slots.update(("shop", "b"), Waiting("b-1", T1))
    assert not blocked.admitted
    assert "SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE" in blocked.reason
    assert slots.update(("payments", "c"), Waiting("c-1", T2)).admitted, (
        "shop's waiter cannot start, so it waits alone"
    )


def test_running_jobs_found_at_start_up_count() -> None:
    slots = BuildSlots(max_running=2)
    slots.update(("shop", "old"), Running("old-1"))
    slots.update(("payments", "older"), Running("old-2"))
    assert not slots.update(("shop", "new"), Waiting("new-1", T1)).admitted
    assert slots.update(("payments", "older"), Idle()).wake == (("shop", "new"),)
    assert slots.update(("shop", "new"), Waiting("new-1", T1)).admitted


def test_a_new_build_of_the_same_servicebuild_takes_its_slot() -> None:
    slots = BuildSlots(max_running=1)
    assert slots.update(("shop", "a"), Waiting("a-1", T1)).admitted
    assert slots.update(("shop", "a"), Waiting("a-2", T2)).admitted, "the superseded Job holds no slot"
    assert not slots.update(("shop", "b"), Waiting("b-1", T3)).admitted


def test_idle_and_gone_servicebuilds_leave_the_queue() -> None:
    slots = BuildSlots(max_running=1)
    slots.update(("shop", "a"), Waiting("a-1", T1))
    slots.update(("shop", "gone"), Waiting("gone-1", T1))
    slots.update(("shop", "b"), Waiting("b-1", T2))
    slots.update(("shop", "c"), Waiting("c-1", T3))
    assert slots.present() == {("shop", "a"), ("shop", "gone"), ("shop", "b"), ("shop", "c")}
    slots.update(("shop", "gone"), Idle())
    assert slots.update(("shop", "b"), Waiting("b-1", T2)).position == 1
    slots.update(("shop", "b"), Idle())
    assert slots.update(("shop", "a"), Idle()).wake == (("shop", "c"),)
    assert slots.present() == {("shop", "c")}
