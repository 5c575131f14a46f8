"""Weighted routes (a canary split) in the proxy's config files: validation before any change, and what a later
process reads back from the files alone. No nginx runs here; tests/integration/test_docker_canary.py runs it."""

from __future__ import annotations

import pytest

from slipway.core.errors import DeployError
from slipway.targets.nginx import NginxProxy

NO_NGINX = "/nonexistent/nginx"  # any call that reached nginx would fail with proxy-unavailable


@pytest.fixture
def proxy(tmp_path) -> NginxProxy:
    return NginxProxy(tmp_path / "proxy", NO_NGINX)


def write_route(proxy: NginxProxy, name: str, text: str) -> None:
    proxy.conf_d.mkdir(parents=True, exist_ok=True)
    (proxy.conf_d / f"{name}.conf").write_text(text)


def test_a_weighted_conf_reads_back_its_primary_and_every_weight(proxy):
    write_route(proxy, "app-prod", proxy._weighted_conf("app-prod", 8080, {20001: 75, 20002: 25}, primary=20001))

    assert proxy.current_upstream("app-prod") == 20001
    assert proxy.current_upstreams("app-prod") == {20001: 75, 20002: 25}


def test_the_primary_comment_decides_even_when_the_primary_is_not_listed_first(proxy):
    text = proxy._weighted_conf("app-prod", 8080, {20001: 75, 20002: 25}, primary=20001)
    lines = text.splitlines(keepends=True)
    first, second = (i for i, line in enumerate(lines) if line.strip().startswith("server 127"))
    lines[first], lines[second] = lines[second], lines[first]  # a hand edit reordering the servers
    write_route(proxy, "app-prod", "".join(lines))

    assert proxy.current_upstream("app-prod") == 20001


def test_the_weighted_conf_never_retries_on_another_server_and_never_takes_one_out(proxy):
    text = proxy._weighted_conf("app-prod", 8080, {20001: 90, 20002: 10}, primary=20001)

    assert "proxy_next_upstream off;" in text
    assert "    server 127.0.0.1:20001 weight=90 max_fails=0;\n    server 127.0.0.1:20002 weight=10 max_fails=0;\n" in text
    assert f"access_log {proxy.access_log('app-prod')} slipway;" in text


def test_a_single_route_reads_back_as_one_upstream_of_weight_one(proxy):
    write_route(proxy, "app-prod", proxy._server_conf("app-prod", 8080, 20001))

    assert (proxy.current_upstream("app-prod"), proxy.current_upstreams("app-prod")) == (20001, {20001: 1})
    assert (proxy.current_upstream("other"), proxy.current_upstreams("other")) == (None, {})


@pytest.mark.parametrize(
    ("upstreams", "primary", "message"),
    [
        ({}, 20001, "a weighted route needs at least one upstream (app-prod): pass {port: weight} with the stable port as primary"),
        ({20001: 75, 20002: 25}, 20003,
         "primary port 20003 is not one of the upstreams [20001, 20002] (app-prod): "
         "the primary is the stable release's port and must carry part of the traffic"),
        ({20001: 100, 20002: 0}, 20001,
         "weight 0 of upstream port 20002 is not a whole number >= 1 (app-prod): "
         "give every upstream a weight of at least 1 (use route() to send everything to one)"),
        ({20001: 7.5, 20002: 2}, 20001,
         "weight 7.5 of upstream port 20001 is not a whole number >= 1 (app-prod): "
         "give every upstream a weight of at least 1 (use route() to send everything to one)"),
        ({20001: 1, 8080: 1}, 20001,
         "listen_port and upstream_port are both 8080 (app-prod): the container must listen on a port of its own"),
        ({20001: 1, 70000: 1}, 20001, "upstream_port 70000 is not a TCP port (app-prod): use a port in 1-65535"),
    ],
)
def test_a_bad_split_is_refused_before_anything_is_written(proxy, upstreams, primary, message):
    with pytest.raises(DeployError) as err:
        proxy.route_weighted("app-prod", 8080, upstreams, primary=primary)

    assert str(err.value) == message
    assert err.value.ref == "invalid-route"
    assert not proxy.root.exists()
