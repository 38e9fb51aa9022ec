"""Signers and their reference signatures: enrolment with its refusals, deletion, and what follows
any change of references (their consistency, the signer's own model)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

import numpy as np
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from catalog.storage import content_lock
from signatures.calibration import writer_dependent_ready
from signatures.models import (
    Reference,
    ReferenceVector,
    Signer,
    Verification,
    WriterModel,
)
from signatures.registry import EncoderSpec
from signatures.selectors import encoder_background, encoder_spec
from signatures.services.inputs import (
    SignatureInput,
    reference_array,
    reference_read,
    signature_discard,
    signature_file_name,
    signature_from_upload,
    signature_store,
    signatures_embed,
)
from signatures.writer_models import MAX_NEGATIVES, descriptors, writer_model_fit
from simsite.errors import ServiceError

logger = logging.getLogger(__name__)

# Enrolment: a reference's ink must span this many pixels of the scan (smaller says nothing of
# the hand), and must differ from every other reference by at least this much (``_difference``).
MIN_INK_SIDE = 48

NEAR_DUPLICATE_DIFFERENCE = 0.3


def signer_create(*, name: str, external_id: str = "") -> Signer:
    name, external_id = name.strip(), external_id.strip()
    if not name:
        raise ServiceError("invalid", "name: a signer needs a name.", field="name")
    if external_id and Signer.objects.filter(external_id=external_id).exists():
        raise ServiceError("duplicate_external_id", f"A signer with external_id '{external_id}' already exists.",
                           field="external_id", status_code=409)  # fmt: skip
    return Signer.objects.create(name=name, external_id=external_id)


def _difference(first: np.ndarray, second: np.ndarray) -> float:
    """How unlike two preprocessed signatures are: the ink that differs over all the ink (0 for
    the same scan; two signings by one hand are >= 0.49 on the three sets of ../shared/data,
    a rescan at 80% size and JPEG quality 60 <= 0.45, typically 0.11)."""
    return float(np.abs(first - second).sum() / max(float((first + second).sum()), 1e-6))


def _enrolment_refusal(
    item: SignatureInput, on_file: dict[str, str], kept: list[tuple[str, np.ndarray]]
) -> tuple[str, str] | None:
    """Why this signature cannot be a reference (code, message), or None. ``on_file``: the
    sha256 of every reference and of this upload's accepted files, with their names; ``kept``:
    (name, preprocessed array) of those whose file could be read."""
    height, width = item.signature.ink_size
    if max(height, width) < MIN_INK_SIDE:
        message = (f"The signature is {width}x{height} pixels; a reference needs at least {MIN_INK_SIDE} pixels on "
                   "its longer side (scan it at a higher resolution).")  # fmt: skip
        return "signature_too_small", message
    if item.image.sha256 in on_file:
        return "duplicate_reference", f"This exact file is already a reference ({on_file[item.image.sha256]})."
    for name, array in kept:
        if _difference(item.signature.array, array) < NEAR_DUPLICATE_DIFFERENCE:
            return "near_duplicate_reference", (f"This is the same signing as {name} (a rescan or a copy): a reference "
                                                "must be a separate signing.")  # fmt: skip
    return None


def references_enrol(*, signer: Signer, files: Iterable[UploadedFile]) -> tuple[list[Reference], list[dict]]:
    """Store each acceptable signature as a reference with its vector (active encoder);
    report each refused file with its reason: unreadable, not a signature, too small, or the
    same signing as a reference on file or another file of this upload. Then refresh the
    references' consistency and the signer's own model (``signer_references_changed``)."""
    references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    on_file = {reference.sha256: f"reference {reference.pk}" for reference in references}
    kept = [(f"reference {reference.pk}", array) for reference in references
            if (array := reference_array(reference)) is not None]  # fmt: skip
    accepted: list[SignatureInput] = []
    rejected: list[dict[str, str]] = []
    for file in files:
        try:
            item = signature_from_upload(file=file, field="files")
        except ServiceError as refusal:
            rejected.append({"filename": file.name or "", "code": refusal.code, "error": refusal.message})
            continue
        refusal = _enrolment_refusal(item, on_file, kept)
        if refusal is not None:
            rejected.append({"filename": file.name or "", "code": refusal[0], "error": refusal[1]})
            continue
        accepted.append(item)
        name = f"'{item.filename}'" if item.filename else "another file"
        on_file[item.image.sha256] = name
        kept.append((name, item.signature.array))
    if not accepted:
        return [], rejected
    spec = encoder_spec()
    vectors = signatures_embed(spec, [item.signature for item in accepted])
    created: list[Reference] = []
    for item, vector in zip(accepted, vectors, strict=True):
        try:
            with transaction.atomic():
                content_lock(sha256=item.image.sha256)
                reference = Reference.objects.create(
                    signer=signer, file=signature_store(item.image), original_filename=item.filename[:255],
                    sha256=item.image.sha256, width=item.image.width, height=item.image.height,
                )  # fmt: skip
                ReferenceVector.objects.create(reference=reference, encoder=spec.key, vector=vector)
        except BaseException:
            signature_discard(signature_file_name(item.image), item.image.sha256)
            raise
        created.append(reference)
    refreshed = {reference.pk: reference for reference in signer_references_changed(signer=signer)}
    return [refreshed.get(reference.pk, reference) for reference in created], rejected


def reference_delete(*, reference: Reference) -> None:
    name, sha, signer = reference.file.name, reference.sha256, reference.signer
    with transaction.atomic():
        reference.delete()
        transaction.on_commit(lambda: signature_discard(name, sha), robust=True)
    signer_references_changed(signer=signer)


def signer_delete(*, signer: Signer) -> None:
    files = list(Reference.objects.filter(signer=signer).values_list("file", "sha256"))
    files += list(Verification.objects.filter(signer=signer).values_list("questioned", "questioned_sha256"))
    with transaction.atomic():
        signer.delete()
        for name, sha in set(files):
            transaction.on_commit(lambda name=name, sha=sha: signature_discard(name, sha), robust=True)


def reference_vectors(references: Sequence[Reference], spec: EncoderSpec) -> np.ndarray:
    """The references' vectors under ``spec``, computing (and keeping) any that are missing."""
    key = spec.key
    stored = dict(ReferenceVector.objects.filter(reference__in=references, encoder=key).values_list(
        "reference_id", "vector"))  # fmt: skip
    missing = [reference for reference in references if reference.pk not in stored]
    if missing:
        read = [reference_read(reference) for reference in missing]
        for reference, vector in zip(missing, signatures_embed(spec, read), strict=True):
            ReferenceVector.objects.update_or_create(reference=reference, encoder=key, defaults={"vector": vector})
            stored[reference.pk] = vector
    return np.asarray([stored[reference.pk] for reference in references], dtype=np.float32)


def _references_key(references: Sequence[Reference]) -> str:
    return hashlib.sha256(",".join(f"{r.pk}:{r.sha256}" for r in references).encode()).hexdigest()


def writer_model_refresh(
    *, signer: Signer, spec: EncoderSpec | None = None, references: Sequence[Reference] | None = None
) -> WriterModel | None:
    """Train, keep or remove the signer's own model under ``spec`` (default: the active
    encoder) to match their references now: trained once the encoder has a background set and
    writer-dependent calibration with as many references or fewer (from one on), retrained when
    the references change, removed when too few remain. ``references``: the signer's, in pk order, where the
    caller has them. Returns the model row, or None."""
    spec = spec or encoder_spec()
    if references is None:
        references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    usable = writer_dependent_ready(spec.calibration, len(references)) and encoder_background(spec) is not None
    if not usable:
        WriterModel.objects.filter(signer=signer, encoder=spec.key).delete()
        return None
    key = _references_key(references)
    current = WriterModel.objects.filter(signer=signer, encoder=spec.key, references_key=key).first()
    if current is not None:
        return current
    own = descriptors(reference_vectors(references, spec))
    others = np.asarray(
        ReferenceVector.objects.filter(encoder=spec.key).exclude(reference__signer=signer)
        .order_by("?").values_list("vector", flat=True)[:MAX_NEGATIVES], dtype=np.float32,
    ).reshape(-1, spec.dim)  # fmt: skip
    negatives = descriptors(np.vstack([others, encoder_background(spec)]))
    model = writer_model_fit(references=own, negatives=negatives, gamma_scale=spec.writer_gamma_scale)
    row, _ = WriterModel.objects.update_or_create(
        signer=signer, encoder=spec.key,
        defaults={"references_key": key, "references": len(references), "negatives": len(negatives),
                  "model": model.to_bytes()},
    )  # fmt: skip
    return row


def _consistency_refresh(*, references: list[Reference], spec: EncoderSpec) -> None:
    """Each reference's mean similarity to the signer's others (its consistency), and whether
    it is an outlier: with 3 references or more, one that matches none of the others at the
    encoder's one-reference threshold - the encoder would call it another person's."""
    if len(references) < 2:
        for reference in references:
            reference.consistency, reference.outlier = None, False
    else:
        vectors = spec.similarity_part(reference_vectors(references, spec))
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, np.nan)
        for reference, value, closest in zip(references, np.nanmean(similarity, axis=1),
                                             np.nanmax(similarity, axis=1), strict=True):  # fmt: skip
            reference.consistency = round(float(value), 4)
            reference.outlier = bool(len(references) >= 3 and closest < spec.threshold_for(1))
    Reference.objects.bulk_update(references, ["consistency", "outlier"])


def signer_references_changed(*, signer: Signer) -> list[Reference]:
    """After an enrolment or a deletion (committed): the references' consistency and the
    signer's own model. The change itself stands whatever happens here: a reference whose file
    cannot be read any more leaves both as they were, logged (verify says so when it needs it).
    Returns the signer's references with their consistency."""
    spec = encoder_spec()
    references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    try:
        _consistency_refresh(references=references, spec=spec)
        writer_model_refresh(signer=signer, spec=spec, references=references)
    except ServiceError as problem:
        logger.warning("signer %s: consistency and own model not refreshed: %s", signer.pk, problem.message)
    return references
