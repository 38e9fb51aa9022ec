"""File routes cannot reach outside their roots, nor files that are not theirs to serve."""

from __future__ import annotations

import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests import images
from tests.search.helpers import add_gallery_image

pytestmark = pytest.mark.django_db

TRICKS = [
    "../settings.py",
    "..%2Fsettings.py",
    "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252fetc%252fpasswd",
    "images/../../etc/passwd",
    "images/..%2F..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "images/%00.png",
    "....//....//etc/passwd",
]


@pytest.mark.parametrize("trick", TRICKS)
def test_media_refuses_traversal(client, media_root, trick):
    (media_root.parent / "settings.py").write_text("OUTSIDE_MEDIA = True\n")  # what "../settings.py" would reach
    response = client.get(f"/media/{trick}")
    assert response.status_code == 404
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"root:" not in body and b"OUTSIDE_MEDIA" not in body


def test_media_serves_images_but_not_imports_weights_or_symlinks_out(client, media_root, role_user):
    image = add_gallery_image(images.png_bytes(seed=1), "a.png")
    assert client.get(f"/media/{image.file.name}").status_code == 200
    default_storage.save("imports/secret.csv", ContentFile(b"id,name\n1,private\n"))
    default_storage.save("models/embeddings/x/weights.pt", ContentFile(b"weights"))
    default_storage.save("models/embeddings/x/training.png", ContentFile(images.png_bytes(seed=2)))
    assert client.get("/media/imports/secret.csv").status_code == 404
    assert client.get("/media/models/embeddings/x/weights.pt").status_code == 404
    assert client.get("/media/models/embeddings/x/training.png").status_code == 302  # plots: log in first
    client.force_login(role_user("viewer", "viewer"))
    assert client.get("/media/models/embeddings/x/training.png").status_code == 200
    link = media_root / "images" / "zz"
    link.mkdir(parents=True)
    os.symlink("/etc/passwd", link / "passwd.png")
    assert client.get("/media/images/zz/passwd.png").status_code == 404


@pytest.mark.parametrize(
    "trick", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fsettings.py", "%252e%252e%252fx.png", "/etc/passwd"]
)
def test_the_earlier_tools_file_routes_look_names_up_not_paths(client, trick):
    add_gallery_image(images.png_bytes(seed=3), "real.png")
    assert client.get(f"/images/{trick}").status_code == 404
    assert client.get(f"/images/thumb/{trick}").status_code == 404
    assert client.get("/images/real.png").status_code == 200
