"""The dashboard's access token (security spec §4.5): derived from the cluster
secret, needed once as ``?token=`` then carried by an HttpOnly SameSite=Strict
cookie, or as a bearer header; ``/health`` stays open.  Off-loopback is the
default trigger; tests bind loopback, so they ask for the token with
``distributed.dashboard.require-token: true``."""

from __future__ import annotations

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from distributed import Client, Scheduler, Worker, config
from distributed.comm.auth_secret import dashboard_token, dashboard_token_for
from distributed.security import Security
from distributed.utils_test import gen_test, inc

SECRET = "dashboard-token-secret-0123456789abcdef0123456789ab"


def test_token_policy():
    assert dashboard_token(SECRET) != SECRET and SECRET not in dashboard_token(SECRET)
    assert dashboard_token_for("127.0.0.1", SECRET) is None  # auto: loopback is open
    assert dashboard_token_for("10.1.2.3", SECRET) == dashboard_token(SECRET)
    assert dashboard_token_for("10.1.2.3", None) is None  # nothing to derive it from
    with config.set({"distributed.dashboard.require-token": True}):
        assert dashboard_token_for("127.0.0.1", SECRET) == dashboard_token(SECRET)
        with pytest.raises(ValueError, match="no secret"):
            dashboard_token_for("127.0.0.1", None)
    with config.set({"distributed.dashboard.require-token": False}):
        assert dashboard_token_for("10.1.2.3", SECRET) is None
    with config.set({"distributed.dashboard.require-token": "sometimes"}):
        with pytest.raises(ValueError, match="auto, true or false"):
            dashboard_token_for("10.1.2.3", SECRET)


async def _get(url: str, **kwargs):
    try:
        return await AsyncHTTPClient().fetch(url, follow_redirects=False, **kwargs)
    except HTTPClientError as e:
        return e.response


@gen_test()
async def test_dashboard_needs_its_token_then_a_cookie():
    sec = Security(auth_secret=SECRET)
    token = dashboard_token(SECRET)
    with config.set({"distributed.dashboard.require-token": True}):
        async with Scheduler(port=0, security=sec, dashboard_address="127.0.0.1:0") as s, \
                Worker(s.address, nthreads=1, security=sec), \
                Client(s.address, asynchronous=True, security=sec) as c:
            assert await c.submit(inc, 1) == 2
            base = f"http://127.0.0.1:{s.http_server.port}"
            assert (await _get(base + "/health")).code == 200  # open for probes
            for path in ("/status", "/metrics", "/json/counts.json", "/api/v1"):
                refused = await _get(base + path)
                assert refused.code == 401, path
                assert SECRET not in refused.body.decode() and token not in refused.body.decode()
            assert (await _get(base + "/status?token=wrong")).code == 401
            first = await _get(base + "/status?token=" + token)
            assert first.code == 200
            cookie = first.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and SECRET not in cookie
            again = await _get(base + "/json/counts.json",
                               headers={"Cookie": cookie.split(";", 1)[0]})
            assert again.code == 200
            scrape = await _get(base + "/metrics", headers={"Authorization": f"Bearer {token}"})
            assert scrape.code == 200 and b"dask_scheduler_workers" in scrape.body
            # The links carry the token, never the secret.
            assert s.dashboard_link.endswith("?token=" + token)
            assert c.dashboard_link is not None and c.dashboard_link.endswith("?token=" + token)
            assert (await _get(c.dashboard_link)).code == 200


@gen_test()
async def test_loopback_dashboard_without_secret_is_open():
    async with Scheduler(port=0, dashboard_address="127.0.0.1:0") as s:
        assert s.http_server.token is None
        assert "token" not in s.dashboard_link
        assert (await _get(f"http://127.0.0.1:{s.http_server.port}/status")).code == 200


def test_token_with_real_processes(monkeypatch):
    """The blocking client's link works against a scheduler in its own
    process, and a request without the token is refused."""
    import urllib.error
    import urllib.request

    from distributed.utils_test import cluster

    # Child processes read their configuration from the environment.
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__AUTH__SECRET", SECRET)
    monkeypatch.setenv("DASK_DISTRIBUTED__DASHBOARD__REQUIRE_TOKEN", "true")
    config.refresh()
    try:
        with cluster(nworkers=1, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as (s, _), \
                Client(s["address"], timeout=30) as c:
            assert c.submit(inc, 1).result(timeout=30) == 2
            link = c.dashboard_link
            assert link and link.endswith("?token=" + dashboard_token(SECRET))
            with urllib.request.urlopen(link, timeout=10) as response:
                assert response.status == 200
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(link.split("?", 1)[0], timeout=10)
            assert info.value.code == 401
    finally:
        monkeypatch.undo()
        config.refresh()
