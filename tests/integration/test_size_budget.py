"""A `Fail` size budget against the real registry: the tag is the operator's to write.

We test these aspects:
- within budget, the build pushes by digest only and the operator tags the digest: the tag serves it;
- over budget after that, the build stalls as SizeBudgetExceeded and the tag still serves the earlier
  digest, while the new image is in the repository by digest only;
- over budget from the first build, the tag was never written (404) and nothing serves the image by tag.
"""

import httpx
import pytest
from cluster import Cluster, eventually
from helpers import NAMESPACE, build_context_fixture, ready, served, spec, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

build_context = build_context_fixture(
    {"Dockerfile": "FROM busybox:1.36\nCOPY greet.sh /\n", "greet.sh": "echo hi"}
)
WITHIN = {"maxBytes": "1Mi", "action": "Fail"}
OVER = {"maxBytes": "100", "action": "Fail"}
"""Smaller than any image: the config alone has more bytes."""


async def test_a_fail_budget_tags_within_and_leaves_the_tag_where_it_was_over(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "greet", spec(oci_registry, "greet", sizeBudget=WITHIN))
    body = await eventually(lambda: ready(cluster, "greet", 1))
    tagged = body["status"]["output"]["digest"]
    assert served(oci_registry, "shop/greet", "1").headers["docker-content-digest"] == tagged

    await cluster.change_spec(NAMESPACE, "greet", {"sizeBudget": OVER})
    body = await eventually(
        lambda: status_of(cluster, "greet").get("build") == 2 and stalled(cluster, "greet")
    )

    stall = next(c for c in body["status"]["conditions"] if c["type"] == "Stalled")
    assert stall["reason"] == "SizeBudgetExceeded"
    assert "over maxBytes 100" in stall["message"]
    refused = kubelet.pushed[body["status"]["jobName"]]
    assert refused != tagged
    assert served(oci_registry, "shop/greet", refused).headers["docker-content-digest"] == refused
    assert served(oci_registry, "shop/greet", "1").headers["docker-content-digest"] == tagged
    assert body["status"]["output"]["digest"] == tagged


async def test_an_image_over_a_fail_budget_from_the_start_is_never_tagged(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "bulky", spec(oci_registry, "bulky", sizeBudget=OVER))

    body = await eventually(lambda: stalled(cluster, "bulky"))

    budget = next(c for c in body["status"]["conditions"] if c["type"] == "WithinSizeBudget")
    assert (budget["status"], budget["reason"]) == ("False", "SizeBudgetExceeded")
    refused = kubelet.pushed[body["status"]["jobName"]]
    assert served(oci_registry, "shop/bulky", refused).headers["docker-content-digest"] == refused
    with pytest.raises(httpx.HTTPStatusError) as untagged:
        served(oci_registry, "shop/bulky", "1")
    assert untagged.value.response.status_code == 404
