"""The SSRF guard: which URLs pass, and the exact reason for those that do not."""

from __future__ import annotations

import pytest

from comfyserve.netguard import Resolver, UnsafeURL, check_public_url


def resolving_to(*addresses: str) -> Resolver:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_public_url("https://hooks.example.com/x", resolve=resolving_to(address))
    assert str(caught.value) == (
        f"refused URL 'https://hooks.example.com/x': hooks.example.com resolves to non-public address {address}"
    )


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(UnsafeURL, match=r"non-public address 10\.0\.0\.1$"):
        check_public_url("http://h.example.com", resolve=resolving_to("93.184.216.34", "10.0.0.1"))


def test_public_addresses_pass() -> None:
    check_public_url("https://h.example.com:8443/p?q=1", resolve=resolving_to("93.184.216.34", "2606:2800:220:1::1"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://h.example.com/x", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http:///path", "no host"),
        ("https://user:pw@h.example.com/", "credentials in URL"),
        ("http://h.example.com:99999/", "malformed URL (Port out of range 0-65535)"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str, reason: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeURL) as caught:
            check_public_url(url, allow_private=allow_private, resolve=resolving_to("93.184.216.34"))
        assert str(caught.value) == f"refused URL {url!r}: {reason}"


def test_real_resolver_refuses_loopback_names_and_literals() -> None:
    for url in ("http://localhost:8080/hook", "http://127.0.0.1/hook", "http://[::1]/hook"):
        with pytest.raises(UnsafeURL, match="non-public address"):
            check_public_url(url)
    check_public_url("http://localhost:8080/hook", allow_private=True)


def test_unresolvable_host_is_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeURL, match=r"host does not resolve \(Name or service not known\)$"):
        check_public_url("http://nowhere.invalid/", resolve=fail)
