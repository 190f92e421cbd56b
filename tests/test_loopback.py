"""keep_on_loopback: a local Ray sends nothing off 127.0.0.1 (checked on the settings, no connection made)."""

import os
import urllib.request

import pytest

from dbdetect import distributed

ENV_KEYS = (
    "http_proxy",
    "HTTP_PROXY",
    "no_proxy",
    "NO_PROXY",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "RAY_USAGE_STATS_ENABLED",
)


@pytest.fixture
def clean_env(monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_metadata_probe_goes_to_a_closed_loopback_port(clean_env):
    distributed.keep_on_loopback()
    proxies = urllib.request.getproxies_environment()
    # requests and urllib send http://169.254.169.254/... to this proxy
    assert proxies["http"] == "http://127.0.0.1:9"
    assert not urllib.request.proxy_bypass_environment("169.254.169.254")
    assert not urllib.request.proxy_bypass_environment("metadata.google.internal")
    for host in ("127.0.0.1", "localhost"):  # Ray's own traffic stays direct
        assert urllib.request.proxy_bypass_environment(host)
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


def test_user_proxy_and_bypass_list_are_kept(clean_env):
    clean_env.setenv("no_proxy", "intranet.example")
    distributed.keep_on_loopback()
    assert urllib.request.proxy_bypass_environment("intranet.example")
    assert urllib.request.proxy_bypass_environment("127.0.0.1")

    clean_env.setenv("http_proxy", "http://proxy.example:3128")
    clean_env.setenv("no_proxy", "intranet.example")
    distributed.keep_on_loopback()
    assert urllib.request.getproxies_environment()["http"] == "http://proxy.example:3128"
    assert "127.0.0.1" not in urllib.request.getproxies_environment().get("no", "")


def test_a_user_setting_of_ray_switches_wins(clean_env):
    clean_env.setenv("RAY_USAGE_STATS_ENABLED", "1")
    distributed.keep_on_loopback()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
