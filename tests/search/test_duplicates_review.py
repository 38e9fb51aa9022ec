"""Resolving near-duplicates: keep one copy (the others deleted with their files), or mark a
group as not duplicates so that it never comes back."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth.models import Group

from catalog.models import GalleryImage
from search.models import DuplicateDismissal, Embedding
from search.selectors.duplicates import duplicate_groups, duplicate_groups_detailed
from tests.search.helpers import gallery_images_with_vectors, vectors_near

pytestmark = pytest.mark.django_db

MODEL = "efficientnet_lite0"


@pytest.fixture
def two_groups() -> tuple[list[GalleryImage], list[GalleryImage]]:
    """Group A: three copies at 80x60, 160x120 and 40x30; group B: two copies; and a loner."""
    rng = np.random.default_rng(0)
    a, b, loner = rng.standard_normal((3, 1280))
    group_a = gallery_images_with_vectors([(80, 60), (160, 120), (40, 30)], vectors_near(a, 3, rng))
    group_b = gallery_images_with_vectors([(50, 50), (60, 40)], vectors_near(b, 2, rng))
    gallery_images_with_vectors([(30, 30)], vectors_near(loner, 1, rng))
    return group_a, group_b


def _ref(image: GalleryImage) -> dict[str, object]:
    return {"type": "gallery_image", "id": image.pk}


def _group_ids(client) -> list[set[int]]:
    body = client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95").json()
    return [{item["id"] for item in group["items"]} for group in body["results"]]


def test_the_copy_to_keep_is_chosen_by_the_rule(two_groups):
    group_a, _ = two_groups
    groups = duplicate_groups(model=MODEL, collection="gallery", threshold=0.95)
    by_rule = {rule: duplicate_groups_detailed(groups, rule=rule) for rule in ("resolution", "oldest", "newest")}
    first = {rule: [group["copies"][0].item.pk for group in detailed] for rule, detailed in by_rule.items()}
    assert group_a[1].pk in first["resolution"]  # 160x120, the largest
    assert group_a[0].pk in first["oldest"] and group_a[2].pk in first["newest"]
    copies = by_rule["resolution"][[g["size"] for g in by_rule["resolution"]].index(3)]["copies"]
    assert [copy.width for copy in copies] == [160, 80, 40] and all(copy.bytes > 0 for copy in copies)


def test_keeping_one_copy_deletes_the_others_and_their_files(
    staff_client, two_groups, django_capture_on_commit_callbacks
):
    group_a, group_b = two_groups
    keep, others = group_a[1], [group_a[0], group_a[2]]
    storage = others[0].file.storage
    with django_capture_on_commit_callbacks(execute=True):  # unused files go once the deletion commits
        response = staff_client.post(
            "/api/v1/duplicates/keep/", {"groups": [{"keep": _ref(keep), "delete": [_ref(o) for o in others]}]},
            format="json",
        )  # fmt: skip
    assert response.status_code == 200, response.json()
    assert response.json() == {"deleted": 2}
    assert not GalleryImage.objects.filter(pk__in=[o.pk for o in others]).exists()
    assert GalleryImage.objects.count() == 4
    assert not any(storage.exists(o.file.name) for o in others) and storage.exists(keep.file.name)
    assert _group_ids(staff_client) == [{image.pk for image in group_b}]


def test_keeping_refuses_when_the_copy_to_keep_is_gone_and_deletes_nothing(staff_client, two_groups):
    group_a, _ = two_groups
    gone = group_a[1].pk
    GalleryImage.objects.filter(pk=gone).delete()
    response = staff_client.post(
        "/api/v1/duplicates/keep/",
        {"groups": [{"keep": {"type": "gallery_image", "id": gone}, "delete": [_ref(group_a[0]), _ref(group_a[2])]}]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "keep_missing"
    assert GalleryImage.objects.filter(pk__in=[group_a[0].pk, group_a[2].pk]).count() == 2


def test_an_item_kept_in_one_group_and_deleted_in_another_is_refused(staff_client, two_groups):
    group_a, group_b = two_groups
    body = {"groups": [{"keep": _ref(group_a[0]), "delete": [_ref(group_a[1])]},
                       {"keep": _ref(group_b[0]), "delete": [_ref(group_a[0])]}]}  # fmt: skip
    response = staff_client.post("/api/v1/duplicates/keep/", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "groups"
    assert GalleryImage.objects.count() == 6


def test_not_duplicates_is_remembered_and_a_new_copy_still_groups(staff_client, two_groups):
    group_a, group_b = two_groups
    response = staff_client.post("/api/v1/duplicates/dismiss/", {"groups": [[_ref(i) for i in group_a]]}, format="json")
    assert response.status_code == 200 and response.json() == {"remembered": 1}
    assert DuplicateDismissal.objects.get().items.count() == 3
    assert _group_ids(staff_client) == [{image.pk for image in group_b}]
    # A fourth copy of A arrives: it groups with A's images, A's own pairs stay apart.
    vector = np.asarray(Embedding.objects.get(gallery_image=group_a[0]).vector, dtype=float)
    newcomer = gallery_images_with_vectors([(90, 90)], vector[None, :])[0]
    groups = _group_ids(staff_client)
    assert {image.pk for image in group_b} in groups
    assert any(newcomer.pk in group and len(group) >= 2 for group in groups)


def test_review_writes_are_for_staff_and_check_their_input(api_client, staff_client, two_groups):
    group_a, _ = two_groups
    body = {"groups": [[_ref(i) for i in group_a]]}
    assert api_client.post("/api/v1/duplicates/dismiss/", body, format="json").status_code in (401, 403)
    one_item = staff_client.post("/api/v1/duplicates/dismiss/", {"groups": [[_ref(group_a[0])]]}, format="json")
    assert one_item.status_code == 400
    same_twice = staff_client.post(
        "/api/v1/duplicates/dismiss/", {"groups": [[_ref(group_a[0]), _ref(group_a[0])]]}, format="json"
    )
    assert same_twice.status_code == 400 and same_twice.json()["error"]["field"] == "groups"
    bad_type = staff_client.post(
        "/api/v1/duplicates/keep/", {"groups": [{"keep": {"type": "x", "id": 1}, "delete": [_ref(group_a[0])]}]},
        format="json",
    )  # fmt: skip
    assert bad_type.status_code == 400
    assert DuplicateDismissal.objects.count() == 0 and GalleryImage.objects.count() == 6


def test_the_review_page_posts_are_for_staff_and_say_what_is_wrong(client, django_user_model, two_groups):
    group_a, _ = two_groups
    members = ",".join(f"gallery_image:{image.pk}" for image in group_a)
    form = {"group": "keep:1", "members-1": members, "keep-1": f"gallery_image:{group_a[0].pk}"}
    anonymous = client.post("/duplicates/", form)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    user = django_user_model.objects.create_user("user", password="pw-user-1")
    client.login(username="user", password="pw-user-1")
    assert client.post("/duplicates/", form).status_code == 403
    user.groups.add(Group.objects.get(name="viewer"))  # may see the review, not resolve it
    assert client.post("/duplicates/", form).status_code == 403
    assert GalleryImage.objects.count() == 6
    django_user_model.objects.create_superuser("staff", password="pw-staff-1")
    client.login(username="staff", password="pw-staff-1")
    response = client.post("/duplicates/?threshold=96", {**form, "keep-1": "gallery_image:x"}, follow=True)
    assert response.redirect_chain[-1][0] == "/duplicates/?threshold=96"
    assert "Not an item" in response.content.decode() and GalleryImage.objects.count() == 6
    response = client.post("/duplicates/", {"action": "keep"}, follow=True)
    assert "Select at least one group." in response.content.decode()
    response = client.post("/duplicates/", form, follow=True)
    assert "Kept one copy of 1 group; deleted 2." in response.content.decode()
    assert GalleryImage.objects.count() == 4


def test_not_duplicates_holds_through_a_third_copy(staff_client):
    """Two images marked as not duplicates never share a group, even when a third image is
    close to both (dismissals are cannot-link rules, not just skipped pairs)."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(1280)
    a, b = gallery_images_with_vectors([(40, 40), (50, 50)], vectors_near(base, 2, rng))
    staff_client.post("/api/v1/duplicates/dismiss/", {"groups": [[_ref(a), _ref(b)]]}, format="json")
    c = gallery_images_with_vectors([(60, 60)], vectors_near(base, 1, rng), name="third")[0]
    groups = _group_ids(staff_client)
    assert groups and all(not {a.pk, b.pk} <= group for group in groups)
    assert any(c.pk in group for group in groups)
