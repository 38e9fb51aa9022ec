"""Writes and decisions for signatures: compare, signers, references, verify, activation.

Signature files are content-addressed under ``signatures/`` (apart from catalog images, so
that deleting a catalog image never touches a signature on file).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from catalog.images import IntakeImage, image_validate, read_limited
from catalog.storage import content_discard, content_lock, content_save
from signatures.models import ActiveEncoder, Reference, ReferenceVector, Signer, Verification
from signatures.preprocessing import SignatureImage, signature_preprocess
from signatures.registry import pretrained_spec
from signatures.selectors import encoder_spec
from simsite.errors import ServiceError


@dataclass(frozen=True)
class SignatureInput:
    """A validated image and what the model will see of it."""

    image: IntakeImage
    signature: SignatureImage
    filename: str = ""

    def preview_data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.signature.preview_png()).decode("ascii")


def signature_input(*, data: bytes, filename: str | None = None, field: str = "image") -> SignatureInput:
    """Bytes -> a validated signature (the image intake's refusals, then the signature's)."""
    image = image_validate(data=data, filename=filename, field=field)
    return SignatureInput(image=image, signature=signature_preprocess(image.data, field=field), filename=filename or "")


def signature_from_upload(*, file: UploadedFile, field: str) -> SignatureInput:
    file.seek(0)
    return signature_input(data=read_limited(file, field=field), filename=file.name, field=field)


def _embed(key: str, arrays: Sequence[np.ndarray]) -> np.ndarray:
    from signatures.encoders import get_encoder  # torch stays out of the web process until needed

    return get_encoder(key).embed(list(arrays))


def _threshold(threshold: float | None, default: float) -> float:
    if threshold is None:
        return default
    if not -1.0 <= threshold <= 1.0:
        raise ServiceError("invalid_threshold", "threshold must be a cosine similarity between -1 and 1.",
                           field="threshold")  # fmt: skip
    return float(threshold)


def signatures_compare(*, first: SignatureInput, second: SignatureInput, threshold: float | None = None) -> dict:
    """Are these two signatures by the same writer? Cosine similarity of the active encoder's
    vectors against a threshold (default: the encoder's calibrated one)."""
    spec = encoder_spec()
    vectors = _embed(spec.key, [first.signature.array, second.signature.array])
    similarity = round(float(vectors[0] @ vectors[1]), 4)
    cut = _threshold(threshold, spec.threshold)
    return {
        "similarity": similarity,
        "threshold": cut,
        "result": "Matched" if similarity >= cut else "Unmatched",
        "model": spec.key,
        "previews": {"image1": first.preview_data_url(), "image2": second.preview_data_url()},
    }


def _file_name(image: IntakeImage) -> str:
    return f"signatures/{image.sha256[:2]}/{image.sha256}.{image.extension}"


def _store(image: IntakeImage) -> str:
    return content_save(name=_file_name(image), data=image.data)


def _discard(name: str, sha256: str) -> None:
    content_discard(
        names=[name],
        sha256=sha256,
        in_use=lambda: (
            Reference.objects.filter(file=name).exists() or Verification.objects.filter(questioned=name).exists()
        ),  # fmt: skip
    )


def signer_create(*, name: str, external_id: str = "") -> Signer:
    name, external_id = name.strip(), external_id.strip()
    if not name:
        raise ServiceError("invalid", "name: a signer needs a name.", field="name")
    if external_id and Signer.objects.filter(external_id=external_id).exists():
        raise ServiceError("duplicate_external_id", f"A signer with external_id '{external_id}' already exists.",
                           field="external_id", status_code=409)  # fmt: skip
    return Signer.objects.create(name=name, external_id=external_id)


def references_enrol(*, signer: Signer, files: Iterable[UploadedFile]) -> tuple[list[Reference], list[dict]]:
    """Store each acceptable signature as a reference with its vector (active encoder);
    report each refused file with its reason."""
    accepted: list[SignatureInput] = []
    rejected: list[dict[str, str]] = []
    for file in files:
        try:
            accepted.append(signature_from_upload(file=file, field="files"))
        except ServiceError as refusal:
            rejected.append({"filename": file.name or "", "code": refusal.code, "error": refusal.message})
    if not accepted:
        return [], rejected
    key = encoder_spec().key
    vectors = _embed(key, [item.signature.array for item in accepted])
    created: list[Reference] = []
    for item, vector in zip(accepted, vectors, strict=True):
        try:
            with transaction.atomic():
                content_lock(sha256=item.image.sha256)
                reference = Reference.objects.create(
                    signer=signer, file=_store(item.image), original_filename=item.filename[:255],
                    sha256=item.image.sha256, width=item.image.width, height=item.image.height,
                )  # fmt: skip
                ReferenceVector.objects.create(reference=reference, encoder=key, vector=vector)
        except BaseException:
            _discard(_file_name(item.image), item.image.sha256)
            raise
        created.append(reference)
    return created, rejected


def reference_delete(*, reference: Reference) -> None:
    name, sha = reference.file.name, reference.sha256
    with transaction.atomic():
        reference.delete()
        transaction.on_commit(lambda: _discard(name, sha))


def signer_delete(*, signer: Signer) -> None:
    files = list(Reference.objects.filter(signer=signer).values_list("file", "sha256"))
    files += list(Verification.objects.filter(signer=signer).values_list("questioned", "questioned_sha256"))
    with transaction.atomic():
        signer.delete()
        for name, sha in set(files):
            transaction.on_commit(lambda name=name, sha=sha: _discard(name, sha))


def _reference_vectors(references: Sequence[Reference], key: str) -> np.ndarray:
    """The references' vectors under ``key``, computing (and keeping) any that are missing."""
    stored = dict(ReferenceVector.objects.filter(reference__in=references, encoder=key).values_list(
        "reference_id", "vector"))  # fmt: skip
    missing = [reference for reference in references if reference.pk not in stored]
    if missing:
        arrays = []
        for reference in missing:
            try:
                with default_storage.open(reference.file.name, "rb") as handle:
                    arrays.append(signature_preprocess(handle.read()).array)
            except FileNotFoundError:
                raise ServiceError(
                    "reference_missing",
                    f"The file of reference {reference.pk} is missing from storage; delete it and enrol it again.",
                    status_code=409,
                ) from None
        for reference, vector in zip(missing, _embed(key, arrays), strict=True):
            ReferenceVector.objects.update_or_create(reference=reference, encoder=key, defaults={"vector": vector})
            stored[reference.pk] = vector
    return np.asarray([stored[reference.pk] for reference in references], dtype=np.float32)


def signature_verify(
    *, signer: Signer, questioned: SignatureInput, threshold: float | None = None, user: object = None
) -> Verification:
    """Score a questioned signature against the signer's references and decide.

    The score is the highest similarity to any reference: with 5 references it gave a
    skilled-forgery EER of 0.302 against 0.333 for the mean (SVC2004, baseline encoder).
    Every verification is logged with its input, model, score, threshold and decision.
    """
    references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    if not references:
        raise ServiceError(
            "no_references",
            f"Signer {signer.pk} has no reference signatures yet; enrol some at "
            f"/api/v1/signatures/signers/{signer.pk}/references/ first.",
            status_code=409,
        )
    spec = encoder_spec()
    refs = _reference_vectors(references, spec.key)
    vector = _embed(spec.key, [questioned.signature.array])[0]
    similarities = refs @ vector
    score = round(float(similarities.max()), 4)
    cut = _threshold(threshold, spec.threshold)
    image = questioned.image
    with transaction.atomic():
        content_lock(sha256=image.sha256)
        return Verification.objects.create(
            signer=signer, questioned=_store(image), questioned_sha256=image.sha256, encoder=spec.key,
            score=score, threshold=cut,
            decision=Verification.Decision.GENUINE if score >= cut else Verification.Decision.FORGED,
            references_used=len(references),
            per_reference=[{"reference": ref.pk, "similarity": round(float(value), 4)}
                           for ref, value in zip(references, similarities, strict=True)],
            requested_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip


def encoder_activate(*, key: str) -> str:
    spec = pretrained_spec(key)
    ActiveEncoder.objects.update_or_create(pk=1, defaults={"key": spec.key})
    return spec.key


def signature_files_resolve(*, path: str, field: str) -> bytes:
    """Read a file the earlier tool's clients name by path: only inside SIGNATURE_FILES_ROOT,
    after resolving symlinks and '..'; anything else is refused."""
    root = settings.SIGNATURE_FILES_ROOT
    if root is None:
        raise ServiceError("path_not_allowed", "File paths need SIGNATURE_FILES_ROOT to be set; upload the images.",
                           field=field, status_code=403)  # fmt: skip
    if not path or "\x00" in path or len(path) > 1024:
        raise ServiceError("path_invalid", "The file path is empty, too long or contains a NUL byte.", field=field)
    try:
        resolved = (root / path).resolve()
    except (OSError, ValueError):
        raise ServiceError("path_invalid", "The file path cannot be resolved.", field=field) from None
    if not resolved.is_relative_to(root):
        raise ServiceError("path_not_allowed", "The file path is outside SIGNATURE_FILES_ROOT.", field=field,
                           status_code=403)  # fmt: skip
    try:
        if not resolved.is_file():
            raise ServiceError("file_not_found", f"No file '{path[:200]}' under SIGNATURE_FILES_ROOT.", field=field,
                               status_code=404)  # fmt: skip
        with resolved.open("rb") as handle:
            return read_limited(handle, field=field)
    except OSError:
        raise ServiceError("path_invalid", "The file cannot be read.", field=field) from None
