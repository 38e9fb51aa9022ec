"""The four roles clients and checks rely on (API.md; README, "Users and permissions"): Django
groups with model permissions. Made by a data migration (accounts 0002), and again after any
``migrate`` or ``flush`` for a role whose group is missing; a group that exists is left as the
administrators keep it."""

from __future__ import annotations

from typing import Any

VIEW_ALL_BUT_BIOMETRIC = [
    ("catalog", None, ["view"]),
    ("search", None, ["view"]),
    ("signatures", "signatureencoder", ["view"]),
    ("signatures", "activeencoder", ["view"]),
]
ROLES = {
    # Everything that is not biometric, read-only.
    "viewer": VIEW_ALL_BUT_BIOMETRIC,
    # Products, gallery, imports, index jobs, duplicates review (and reading what they edit).
    "catalog_editor": [
        *VIEW_ALL_BUT_BIOMETRIC,
        ("catalog", "product", ["add", "change", "delete"]),
        ("catalog", "galleryimage", ["add", "change", "delete"]),
        ("catalog", "productimport", ["add", "change", "delete"]),
        ("search", "indexjob", ["add", "change"]),
        ("search", "duplicatedismissal", ["add", "change", "delete"]),
        ("search", "duplicatescan", ["add"]),
    ],
    # Signers, references, verify and the verification log.
    "signature_officer": [
        ("signatures", "signer", ["view", "add", "change", "delete"]),
        ("signatures", "reference", ["view", "add", "change", "delete"]),
        ("signatures", "referencevector", ["view"]),
        ("signatures", "verification", ["view", "add"]),
        ("signatures", "signatureencoder", ["view"]),
        ("signatures", "activeencoder", ["view"]),
    ],
    # Train, activate and delete models and encoders (and build their indexes).
    "model_manager": [
        *VIEW_ALL_BUT_BIOMETRIC,
        ("search", "trainedmodel", ["add", "change", "delete"]),
        ("search", "activemodel", ["add", "change"]),
        ("search", "embeddingmodelchoice", ["add", "change"]),
        ("search", "searchtuning", ["add", "change", "delete"]),
        ("search", "indexjob", ["add", "change"]),
        ("signatures", "signatureencoder", ["add", "change", "delete"]),
        ("signatures", "activeencoder", ["add", "change"]),
    ],
}


def _permissions(Permission, app_label, model, actions):
    wanted = Permission.objects.filter(content_type__app_label=app_label)
    if model is not None:
        wanted = wanted.filter(content_type__model=model)
    codenames = [p for p in wanted.values_list("codename", flat=True) if p.split("_", 1)[0] in actions]
    return list(wanted.filter(codename__in=codenames))


def _permissions(permission_model: Any, app_label: str, model: str | None, actions: list[str]) -> list[Any]:
    wanted = permission_model.objects.filter(content_type__app_label=app_label)
    if model is not None:
        wanted = wanted.filter(content_type__model=model)
    return [perm for perm in wanted if perm.codename.split("_", 1)[0] in actions]


def roles_create(*, group_model: Any, permission_model: Any) -> list[str]:
    """Create each role's group with its permissions, unless a group of that name exists.
    Takes the models (historical ones in a migration); returns the names created."""
    created = []
    for name, grants in ROLES.items():
        group, made = group_model.objects.get_or_create(name=name)
        if not made:
            continue
        for app_label, model, actions in grants:
            group.permissions.add(*_permissions(permission_model, app_label, model, actions))
        created.append(name)
    return created
