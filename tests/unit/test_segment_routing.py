"""`sites.<name>.max_segments`: a message goes only to a site that carries it whole, and one that no site
can carry is refused at submit naming its segments."""

from __future__ import annotations

import pytest

from ingress.routing import Router
from shared.settings import RoutingSettings, load_settings
from shared.topology import site_queue
from tests.ingress_helpers import api_for, queued_jobs, sms


def test_segment_limits_are_each_sites_own_capped_by_the_ingress() -> None:
    settings = load_settings(
        ingress={"max_segments": 8},
        sites={"a": {"url": "http://a/", "max_segments": 5}, "b": {"url": "http://b/", "max_segments": 20}},
    )
    assert settings.segment_limits == {"a": 5, "b": 8}


def test_segment_limits_default_to_what_each_platform_kind_carries_out_of_the_box() -> None:
    http = {"url": "http://h/"}
    smpp = {"platform": "smpp", "host": "smsc", "port": 2775, "system_id": "r", "password": "p"}
    settings = load_settings(
        ingress={"max_segments": 8},
        sites={
            "kannel": {**http, "platform": "kannel", "username": "u", "password": "p"},
            "jasmin": {**http, "platform": "jasmin", "username": "u", "password": "p"},
            "json": http,
            "smpp": smpp,
            "raised": {**http, "platform": "kannel", "username": "u", "password": "p", "max_segments": 3},
        },
    )
    assert settings.segment_limits == {"kannel": 1, "jasmin": 5, "json": 8, "smpp": 8, "raised": 3}


def test_round_robin_skips_a_site_that_would_cut_the_message() -> None:
    router = Router(settings=RoutingSettings(), sites=["a", "b"], segment_limits={"a": 5, "b": 10})
    assert [router.next_site(7) for _ in range(4)] == ["b"] * 4
    assert sorted(router.next_site(5) for _ in range(4)) == ["a", "a", "b", "b"]


def test_primary_hands_a_long_message_to_a_site_that_carries_it() -> None:
    routing = RoutingSettings(policy="primary", primary="a")  # type: ignore[arg-type]
    router = Router(settings=routing, sites=["a", "b"], segment_limits={"a": 5, "b": 10})
    assert (router.next_site(1), router.next_site(6)) == ("a", "b")


@pytest.mark.integration
async def test_submit_refuses_what_no_site_carries_and_routes_what_one_does(
    broker_cleanup, settings_factory, store_url
) -> None:
    settings = settings_factory(
        sites={
            "a": {"url": "http://127.0.0.1:9/a", "max_segments": 1},
            "b": {"url": "http://127.0.0.1:9/b", "max_segments": 3},
        },
    )
    async with api_for(settings) as api:
        refused = await api.submit(sms(body="x" * (153 * 3 + 1)))
        assert refused.status_code == 422
        [error] = refused.json()["errors"]
        assert (error["field"], error["message"]) == ("body", "takes 4 gsm7 segments; at most 3 are allowed")
        for _ in range(3):
            assert (await api.submit(sms(body="x" * 200))).status_code == 202
        prefix = settings.broker.prefix
        assert await queued_jobs(settings.broker.url, site_queue(prefix, "b")) == 3
        assert await queued_jobs(settings.broker.url, site_queue(prefix, "a")) == 0
