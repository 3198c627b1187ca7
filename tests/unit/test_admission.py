"""We test these aspects of the build slots:

- without limits every build starts;
- at the operator-wide limit builds wait, with positions first come first served by their `since`;
- a freed slot goes to the earliest waiter, not to whoever asks first;
- a namespace at its own limit does not hold up builds of other namespaces;
- asking again for an admitted Job is idempotent; forgetting and retaining drop waiters.
"""

from servicebuild.admission import BuildSlots

T1, T2, T3 = "2026-11-28T10:00:01Z", "2026-11-28T10:00:02Z", "2026-11-28T10:00:03Z"


def test_no_limits_admit_everything() -> None:
    slots = BuildSlots()
    assert all(slots.request(("shop", f"b{i}"), f"b{i}-1-x", T1).admitted for i in range(50))


def test_operator_limit_queues_first_come_first_served() -> None:
    slots = BuildSlots(max_running=1)
    assert slots.request(("shop", "a"), "a-1", T1).admitted
    assert slots.request(("shop", "c"), "c-1", T3).position == 1
    earlier = slots.request(("shop", "b"), "b-1", T2)
    later = slots.request(("shop", "c"), "c-1", T3)
    assert (later.admitted, later.position) == (False, 2), "an earlier waiter moves ahead"
    assert (earlier.admitted, earlier.position) == (False, 1)
    assert "SERVICEBUILD_MAX_RUNNING_BUILDS" in earlier.reason

    slots.finished("shop", "a-1")
    assert slots.next_waiting() == [("shop", "b")]
    assert not slots.request(("shop", "c"), "c-1", T3).admitted, "the earlier waiter gets the slot"
    assert slots.request(("shop", "b"), "b-1", T2).admitted
    assert slots.request(("shop", "b"), "b-1", T2).admitted, "asking again for a started Job is fine"
    assert slots.request(("shop", "c"), "c-1", T3).position == 1


def test_namespace_limit_does_not_block_other_namespaces() -> None:
    slots = BuildSlots(max_running=3, max_running_per_namespace=1)
    assert slots.request(("shop", "a"), "a-1", T1).admitted
    blocked = slots.request(("shop", "b"), "b-1", T1)
    assert not blocked.admitted
    assert "SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE" in blocked.reason
    assert slots.request(("payments", "c"), "c-1", T2).admitted, (
        "shop's waiter cannot start, so it waits alone"
    )


def test_running_jobs_found_at_start_up_count() -> None:
    slots = BuildSlots(max_running=2)
    slots.started("shop", "old-1")
    slots.started("payments", "old-2")
    assert not slots.request(("shop", "new"), "new-1", T1).admitted
    slots.finished("payments", "old-2")
    assert slots.request(("shop", "new"), "new-1", T1).admitted


def test_forget_and_retain_drop_waiters() -> None:
    slots = BuildSlots(max_running=1)
    slots.request(("shop", "a"), "a-1", T1)
    slots.request(("shop", "gone"), "gone-1", T1)
    slots.request(("shop", "b"), "b-1", T2)
    slots.request(("shop", "c"), "c-1", T3)
    slots.retain({("shop", "a"), ("shop", "b"), ("shop", "c")})
    assert slots.request(("shop", "b"), "b-1", T2).position == 1
    slots.forget(("shop", "b"))
    slots.finished("shop", "a-1")
    assert slots.next_waiting() == [("shop", "c")]
