"""The one rule for a name under a root (simsite.files.resolve_under_root), which every folder
clients or admins may name files in follows: CSV image paths, training folders and label files,
the earlier signature tool's paths, the admin's training form, /media/."""

from __future__ import annotations

import os

import pytest

from search.datasets import dataset_load
from simsite.files import resolve_under_root
from tests import images


@pytest.fixture
def root(tmp_path):
    inside = tmp_path / "root"
    (inside / "cars").mkdir(parents=True)
    (inside / "cars" / "a.png").write_bytes(images.png_bytes(seed=1))
    (tmp_path / "secret.png").write_bytes(images.png_bytes(seed=2))
    os.symlink(tmp_path / "secret.png", inside / "cars" / "out.png")  # leads out of the root
    os.symlink(inside / "cars" / "a.png", inside / "cars" / "in.png")  # stays inside
    os.symlink(inside / "loop", inside / "loop")
    return inside


@pytest.mark.parametrize(
    ("name", "inside"),
    [
        ("cars/a.png", True),
        ("cars/in.png", True),
        ("cars", True),
        ("cars/missing.png", True),  # existence is the caller's business
        ("cars/out.png", False),
        ("../secret.png", False),
        ("cars/../../secret.png", False),
        ("/etc/passwd", False),
        ("", False),
        ("cars/\x00a.png", False),
        ("x" * 1025, False),
        ("loop", False),
    ],
)
def test_a_name_is_inside_its_root_only_once_resolved(root, name, inside):
    resolved = resolve_under_root(root, name)
    assert (resolved is not None) == inside
    if inside:
        assert resolved.is_relative_to(root.resolve())


def test_the_root_may_itself_be_reached_through_a_symlink(root, tmp_path):
    link = tmp_path / "link-to-root"
    os.symlink(root, link)
    assert resolve_under_root(link, "cars/a.png") == (root / "cars" / "a.png").resolve()
    assert resolve_under_root(link, "cars/out.png") is None


@pytest.mark.django_db
def test_training_data_leaves_out_files_a_symlink_leads_out_of_the_folder(root, tmp_path):
    (root / "trucks").mkdir()
    (root / "trucks" / "t.png").write_bytes(images.png_bytes(seed=3))
    names = sorted(item.name for item in dataset_load(root))
    assert names == ["cars/a.png", "cars/in.png", "trucks/t.png"]  # not cars/out.png
