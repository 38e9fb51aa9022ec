from __future__ import annotations

import time

import pytest

from catalog.fetch import image_fetch
from catalog.images import ImageRejected
from tests.images import png_bytes


def refusal(url: str) -> str:
    with pytest.raises(ImageRejected) as caught:
        image_fetch(url=url)
    return caught.value.code


def test_fetches_an_image_by_url(local_server):
    image = image_fetch(url=local_server.url("/image.png"))
    assert image.format == "PNG" and image.data == png_bytes(seed=7)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://0.0.0.0/x.png",
        "http://224.0.0.1/x.png",
        "http://192.168.1.1/x.png",
        "http://[64:ff9b::7f00:1]/x.png",  # NAT64 to 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 to 169.254.169.254
        "http://[64:ff9b:1::a00:1]/x.png",  # local-use NAT64 to 10.0.0.1
        "http://[2002:a00:1::1]/x.png",  # 6to4 of 10.0.0.1
        "http://[2002:c0a8:101::]/x.png",  # 6to4 of 192.168.1.1
        "http://[::ffff:127.0.0.1]/x.png",
    ],
)
def test_refuses_non_public_addresses_without_connecting(url):
    assert refusal(url) == "url_host_not_allowed"


def test_refuses_loopback_even_when_a_server_listens_there(local_server):
    assert refusal(local_server.url("/image.png", host="127.0.0.1")) == "url_host_not_allowed"
    assert local_server.hits == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"])
def test_refuses_other_schemes(url):
    assert refusal(url) == "url_scheme_not_allowed"


def test_refuses_redirect_to_private_address(local_server):
    local_server.add_redirect("/to-private", "http://10.0.0.7/secret.png")
    local_server.add_redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    assert refusal(local_server.url("/to-private")) == "url_host_not_allowed"
    assert refusal(local_server.url("/to-metadata")) == "url_host_not_allowed"


def test_follows_at_most_three_redirects(local_server):
    for hop in range(4):
        local_server.add_redirect(f"/hop{hop}", f"/hop{hop + 1}")
    local_server.add_bytes("/hop4", png_bytes())
    assert image_fetch(url=local_server.url("/hop1")).format == "PNG"  # three redirects
    assert refusal(local_server.url("/hop0")) == "url_too_many_redirects"


def test_refuses_non_image_content(local_server):
    page = local_server.add_bytes("/page.html", b"<html><body>hello</body></html>", "text/html")
    text = local_server.add_bytes("/fake.png", b"not an image at all", "image/png")
    assert refusal(page) == "url_not_an_image"
    assert refusal(text) == "url_not_an_image"


def test_refuses_oversize_body_declared_or_streamed(local_server, settings):
    settings.IMAGE_MAX_UPLOAD_BYTES = 100_000
    big = png_bytes() + b"\0" * 200_000
    declared = local_server.add_bytes("/big.png", big)

    def streamed(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        for _ in range(20):
            handler.wfile.write(b"\0" * 16_384)

    local_server.routes["/stream.png"] = streamed
    assert refusal(declared) == "url_too_large"
    assert refusal(local_server.url("/stream.png")) == "url_too_large"


def test_times_out_on_a_slow_server(local_server, settings):
    settings.IMAGE_FETCH_READ_TIMEOUT = 1

    def slow(handler):
        time.sleep(3)

    local_server.routes["/slow.png"] = slow
    started = time.monotonic()
    assert refusal(local_server.url("/slow.png")) == "url_unreachable"
    assert time.monotonic() - started < 2.5


def test_a_server_dripping_bytes_is_cut_off_at_the_total_deadline(local_server, settings):
    settings.IMAGE_FETCH_READ_TIMEOUT = 5
    settings.IMAGE_FETCH_TOTAL_TIMEOUT = 2

    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        try:
            for _ in range(40):  # one byte every 0.3 s: each read is well inside the read timeout
                handler.wfile.write(b"\x89")
                handler.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass  # the client hung up, as it should

    local_server.routes["/drip.png"] = drip
    started = time.monotonic()
    with pytest.raises(ImageRejected) as caught:
        image_fetch(url=local_server.url("/drip.png"))
    assert caught.value.code == "url_unreachable" and "longer than 2 s" in caught.value.message
    assert time.monotonic() - started < 3.5


def test_http_errors_and_unresolvable_hosts(local_server):
    assert refusal(local_server.url("/missing.png")) == "url_http_error"
    assert refusal("http://no-such-host.invalid/a.png") == "url_unreachable"


def test_cached_by_url(local_server):
    from catalog.storage import image_store

    url = local_server.url("/image.png")
    image_store(image=image_fetch(url=url))
    assert len(local_server.hits) == 1
    assert image_fetch(url=url).sha256 == image_fetch(url=url).sha256
    assert len(local_server.hits) == 1
