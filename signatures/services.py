"""Writes and decisions for signatures: compare, signers, references, verify, activation.

Signature files are content-addressed under ``signatures/`` (apart from catalog images, so
that deleting a catalog image never touches a signature on file).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from catalog.images import IntakeImage, image_validate, read_limited
from catalog.storage import content_discard, content_lock, content_save
from signatures.calibration import (
    WRITER_DEPENDENT,
    WRITER_INDEPENDENT,
    confidence,
    rates_at,
    table_for,
    threshold_at_far,
)
from signatures.datasets import Source
from signatures.models import (
    ActiveEncoder,
    Reference,
    ReferenceVector,
    SignatureEncoder,
    Signer,
    Verification,
    WriterModel,
)
from signatures.preprocessing import SignatureImage, signature_preprocess
from signatures.registry import PRETRAINED, EncoderSpec
from signatures.selectors import active_encoder_key, encoder_background, encoder_spec
from signatures.writer_models import MAX_NEGATIVES, MIN_REFERENCES, WriterClassifier, descriptors, writer_model_fit
from simsite.celery import task_send
from simsite.errors import ServiceError
from simsite.files import private_storage, resolve_under_root
from simsite.training_runs import (
    training_run_create,
    training_run_execute,
    training_run_fail,
    training_run_touch,
    training_runs_reconcile,
)

# Training: epochs by default (about 5 minutes for SVC2004's 24 writers on a 2-core CPU;
# more overfit: README, "Signatures"), and the share of writers kept out for validation.
DEFAULT_EPOCHS = 12
# The time budget of preparing and training (epochs stop when it is spent); calibrating and
# saving take a few minutes more: the three sets of ../shared/data train within 30 minutes on a
# 2-core CPU.
DEFAULT_MINUTES = 24.0
VALIDATION_FRACTION = 0.25
# Enrolment: a reference's ink must span this many pixels of the scan (smaller says nothing of
# the hand), and must differ from every other reference by at least this much (``_difference``).
MIN_INK_SIDE = 48
NEAR_DUPLICATE_DIFFERENCE = 0.3

logger = logging.getLogger(__name__)


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


def _embed(spec: EncoderSpec, arrays: Sequence[np.ndarray]) -> np.ndarray:
    from signatures.encoders import get_encoder  # torch stays out of the web process until needed

    return get_encoder(spec).embed(list(arrays))


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
    vectors = spec.similarity_part(_embed(spec, [first.signature.array, second.signature.array]))
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
    """Signatures go to the private storage: never under a public URL."""
    return content_save(name=_file_name(image), data=image.data, storage=private_storage())


def _discard(name: str, sha256: str) -> None:
    content_discard(
        names=[name],
        sha256=sha256,
        in_use=lambda: (
            Reference.objects.filter(file=name).exists() or Verification.objects.filter(questioned=name).exists()
        ),  # fmt: skip
        storage=private_storage(),
    )


def signer_create(*, name: str, external_id: str = "") -> Signer:
    name, external_id = name.strip(), external_id.strip()
    if not name:
        raise ServiceError("invalid", "name: a signer needs a name.", field="name")
    if external_id and Signer.objects.filter(external_id=external_id).exists():
        raise ServiceError("duplicate_external_id", f"A signer with external_id '{external_id}' already exists.",
                           field="external_id", status_code=409)  # fmt: skip
    return Signer.objects.create(name=name, external_id=external_id)


def _reference_array(reference: Reference) -> np.ndarray | None:
    try:
        with private_storage().open(reference.file.name, "rb") as handle:
            return signature_preprocess(handle.read()).array
    except (FileNotFoundError, ServiceError):
        return None


def _difference(first: np.ndarray, second: np.ndarray) -> float:
    """How unlike two preprocessed signatures are: the ink that differs over all the ink (0 for
    the same scan; two signings by one hand are >= 0.49 on the three sets of ../shared/data,
    a rescan at 80% size and JPEG quality 60 <= 0.45, typically 0.11)."""
    return float(np.abs(first - second).sum() / max(float((first + second).sum()), 1e-6))


def _enrolment_refusal(item: SignatureInput, kept: list[tuple[str, str, np.ndarray]]) -> tuple[str, str] | None:
    """Why this signature cannot be a reference (code, message), or None. ``kept``: (sha256,
    name, preprocessed array) of the signer's references and of this upload's accepted files."""
    height, width = item.signature.ink_size
    if max(height, width) < MIN_INK_SIDE:
        message = (f"The signature is {width}x{height} pixels; a reference needs at least {MIN_INK_SIDE} pixels on "
                   "its longer side (scan it at a higher resolution).")  # fmt: skip
        return "signature_too_small", message
    for sha256, name, array in kept:
        if sha256 == item.image.sha256:
            return "duplicate_reference", f"This exact file is already a reference ({name})."
        if _difference(item.signature.array, array) < NEAR_DUPLICATE_DIFFERENCE:
            return "near_duplicate_reference", (f"This is the same signing as {name} (a rescan or a copy): a reference "
                                                "must be a separate signing.")  # fmt: skip
    return None


def references_enrol(*, signer: Signer, files: Iterable[UploadedFile]) -> tuple[list[Reference], list[dict]]:
    """Store each acceptable signature as a reference with its vector (active encoder);
    report each refused file with its reason: unreadable, not a signature, too small, or the
    same signing as a reference on file or another file of this upload. Then refresh the
    references' consistency and the signer's own model (``signer_references_changed``)."""
    kept = [(reference.sha256, f"reference {reference.pk}", array)
            for reference in Reference.objects.filter(signer=signer).order_by("pk")
            if (array := _reference_array(reference)) is not None]  # fmt: skip
    accepted: list[SignatureInput] = []
    rejected: list[dict[str, str]] = []
    for file in files:
        try:
            item = signature_from_upload(file=file, field="files")
        except ServiceError as refusal:
            rejected.append({"filename": file.name or "", "code": refusal.code, "error": refusal.message})
            continue
        refusal = _enrolment_refusal(item, kept)
        if refusal is not None:
            rejected.append({"filename": file.name or "", "code": refusal[0], "error": refusal[1]})
            continue
        accepted.append(item)
        kept.append(
            (item.image.sha256, f"'{item.filename}'" if item.filename else "another file", item.signature.array)
        )
    if not accepted:
        return [], rejected
    spec = encoder_spec()
    vectors = _embed(spec, [item.signature.array for item in accepted])
    created: list[Reference] = []
    for item, vector in zip(accepted, vectors, strict=True):
        try:
            with transaction.atomic():
                content_lock(sha256=item.image.sha256)
                reference = Reference.objects.create(
                    signer=signer, file=_store(item.image), original_filename=item.filename[:255],
                    sha256=item.image.sha256, width=item.image.width, height=item.image.height,
                )  # fmt: skip
                ReferenceVector.objects.create(reference=reference, encoder=spec.key, vector=vector)
        except BaseException:
            _discard(_file_name(item.image), item.image.sha256)
            raise
        created.append(reference)
    signer_references_changed(signer=signer)
    for reference in created:
        reference.refresh_from_db(fields=["consistency", "outlier"])
    return created, rejected


def reference_delete(*, reference: Reference) -> None:
    name, sha, signer = reference.file.name, reference.sha256, reference.signer
    with transaction.atomic():
        reference.delete()
        transaction.on_commit(lambda: _discard(name, sha), robust=True)
    signer_references_changed(signer=signer)


def signer_delete(*, signer: Signer) -> None:
    files = list(Reference.objects.filter(signer=signer).values_list("file", "sha256"))
    files += list(Verification.objects.filter(signer=signer).values_list("questioned", "questioned_sha256"))
    with transaction.atomic():
        signer.delete()
        for name, sha in set(files):
            transaction.on_commit(lambda name=name, sha=sha: _discard(name, sha), robust=True)


def _reference_vectors(references: Sequence[Reference], spec: EncoderSpec) -> np.ndarray:
    """The references' vectors under ``spec``, computing (and keeping) any that are missing."""
    key = spec.key
    stored = dict(ReferenceVector.objects.filter(reference__in=references, encoder=key).values_list(
        "reference_id", "vector"))  # fmt: skip
    missing = [reference for reference in references if reference.pk not in stored]
    if missing:
        arrays = []
        for reference in missing:
            try:
                with private_storage().open(reference.file.name, "rb") as handle:
                    arrays.append(signature_preprocess(handle.read()).array)
            except FileNotFoundError:
                raise ServiceError(
                    "reference_missing",
                    f"The file of reference {reference.pk} is missing from storage; delete it and enrol it again.",
                    status_code=409,
                ) from None
        for reference, vector in zip(missing, _embed(spec, arrays), strict=True):
            ReferenceVector.objects.update_or_create(reference=reference, encoder=key, defaults={"vector": vector})
            stored[reference.pk] = vector
    return np.asarray([stored[reference.pk] for reference in references], dtype=np.float32)


def _references_key(references: Sequence[Reference]) -> str:
    return hashlib.sha256(",".join(f"{r.pk}:{r.sha256}" for r in references).encode()).hexdigest()


def writer_model_refresh(*, signer: Signer, spec: EncoderSpec | None = None) -> WriterModel | None:
    """Train, keep or remove the signer's own model under ``spec`` (default: the active
    encoder) to match their references now: trained once they have ``MIN_REFERENCES`` and the
    encoder has a background set and writer-dependent calibration, retrained when the references
    change, removed when too few remain. Returns the model row, or None."""
    spec = spec or encoder_spec()
    references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    usable = (len(references) >= MIN_REFERENCES and spec.calibration.get(WRITER_DEPENDENT)
              and encoder_background(spec) is not None)  # fmt: skip
    if not usable:
        WriterModel.objects.filter(signer=signer, encoder=spec.key).delete()
        return None
    key = _references_key(references)
    current = WriterModel.objects.filter(signer=signer, encoder=spec.key, references_key=key).first()
    if current is not None:
        return current
    own = descriptors(_reference_vectors(references, spec))
    others = np.asarray(
        ReferenceVector.objects.filter(encoder=spec.key).exclude(reference__signer=signer)
        .order_by("?").values_list("vector", flat=True)[:MAX_NEGATIVES], dtype=np.float32,
    ).reshape(-1, spec.dim)  # fmt: skip
    negatives = descriptors(np.vstack([others, encoder_background(spec)]))
    model = writer_model_fit(references=own, negatives=negatives)
    row, _ = WriterModel.objects.update_or_create(
        signer=signer, encoder=spec.key,
        defaults={"references_key": key, "references": len(references), "negatives": len(negatives),
                  "model": model.to_bytes()},
    )  # fmt: skip
    return row


def _consistency_refresh(*, signer: Signer, spec: EncoderSpec) -> None:
    """Each reference's mean similarity to the signer's others (its consistency), and whether
    it is an outlier: with 3 references or more, one that matches none of the others at the
    encoder's one-reference threshold - the encoder would call it another person's."""
    references = list(Reference.objects.filter(signer=signer).order_by("pk"))
    if len(references) < 2:
        Reference.objects.filter(signer=signer).update(consistency=None, outlier=False)
        return
    vectors = spec.similarity_part(_reference_vectors(references, spec))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, np.nan)
    consistency = np.nanmean(similarity, axis=1)
    best = np.nanmax(similarity, axis=1)
    for reference, value, closest in zip(references, consistency, best, strict=True):
        outlier = len(references) >= 3 and closest < spec.threshold_for(1)
        Reference.objects.filter(pk=reference.pk).update(consistency=round(float(value), 4), outlier=bool(outlier))


def signer_references_changed(*, signer: Signer) -> None:
    """After an enrolment or a deletion: the references' consistency and the signer's own model."""
    spec = encoder_spec()
    _consistency_refresh(signer=signer, spec=spec)
    writer_model_refresh(signer=signer, spec=spec)


@dataclass(frozen=True)
class Decision:
    mode: str
    score: float
    threshold: float
    confidence: float | None
    operating_point: dict[str, object]


def _decide(*, spec: EncoderSpec, signer: Signer, references: int, similarity: float, vector: np.ndarray,
            threshold: float | None) -> Decision:  # fmt: skip
    """The score, threshold and operating point verify decides with.

    A threshold in the request is a cosine similarity (the earlier tool's meaning): the best
    similarity decides. Otherwise the signer's own model decides where there is one, else the
    best similarity; the threshold is the operating point (``SIGNATURE_TARGET_FAR``, or the
    equal-error point) of the validation writers with as many references.
    """
    if threshold is not None:
        cut = _threshold(threshold, spec.threshold)
        point = {"name": "requested", "threshold": cut, "references": references}
        return Decision(WRITER_INDEPENDENT, similarity, cut, None, point)
    mode, score = WRITER_INDEPENDENT, similarity
    row = writer_model_refresh(signer=signer, spec=spec) if references >= MIN_REFERENCES else None
    if row is not None:
        model = WriterClassifier.from_bytes(bytes(row.model))
        mode, score = WRITER_DEPENDENT, float(model.score(descriptors(vector))[0])
    count, table = table_for(spec.calibration, mode, references)
    if not table:  # a pretrained encoder: its equal-error thresholds measured on SVC2004
        cut = spec.threshold_for(references)
        point = {"name": "eer", "threshold": cut, "references": references, "calibrated_on": "registry"}
        return Decision(mode, score, cut, None, point)
    target = settings.SIGNATURE_TARGET_FAR
    if target > 0:
        cut, far, frr = threshold_at_far(table, target)
        point = {"name": "target_far", "target_far": target}
    else:
        cut = float(table["eer_threshold"])
        far, frr = rates_at(table, cut)
        point = {"name": "eer"}
    point |= {
        "threshold": round(cut, 6),
        "references": references,
        "calibrated_with_references": int(count),
        "expected_far": round(far, 4),
        "expected_frr": round(frr, 4),
        "calibrated_on": "validation writers",
    }
    return Decision(mode, score, cut, round(confidence(table, score), 4), point)


def signature_verify(
    *, signer: Signer, questioned: SignatureInput, threshold: float | None = None, user: object = None
) -> Verification:
    """Score a questioned signature against the signer's references and decide (``_decide``).

    The writer-independent score is the highest similarity to any reference: with 5 references
    it gave a skilled-forgery EER of 0.210 against 0.240 for the mean (SVC2004, default
    encoder). Every verification is logged with its input, model, mode, scores, operating point
    and decision.
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
    refs = _reference_vectors(references, spec)
    vector = _embed(spec, [questioned.signature.array])[0]
    similarities = spec.similarity_part(refs) @ spec.similarity_part(vector)
    similarity = round(float(similarities.max()), 4)
    decision = _decide(spec=spec, signer=signer, references=len(references), similarity=similarity, vector=vector,
                       threshold=threshold)  # fmt: skip
    image = questioned.image
    with transaction.atomic():
        content_lock(sha256=image.sha256)
        return Verification.objects.create(
            signer=signer, questioned=_store(image), questioned_sha256=image.sha256, encoder=spec.key,
            score=round(decision.score, 4), threshold=round(decision.threshold, 4), mode=decision.mode,
            similarity=similarity, confidence=decision.confidence, operating_point=decision.operating_point,
            decision=(Verification.Decision.GENUINE if decision.score >= decision.threshold
                      else Verification.Decision.FORGED),
            references_used=len(references),
            per_reference=[{"reference": ref.pk, "similarity": round(float(value), 4)}
                           for ref, value in zip(references, similarities, strict=True)],
            requested_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip


def _png_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def verification_explain(*, verification: Verification, questioned: SignatureInput) -> dict[str, object]:
    """What a person needs to check a decision: the questioned signature and its closest
    reference as the model saw them (cropped, centred, ink dark), and the two overlaid - the
    questioned ink red, the reference's blue, ink they share dark - so that a stroke one has
    and the other lacks shows in colour."""
    closest = max(verification.per_reference, key=lambda item: item["similarity"])
    reference = Reference.objects.filter(pk=closest["reference"]).first()
    array = _reference_array(reference) if reference is not None else None
    explained: dict[str, object] = {
        "questioned_preview": questioned.preview_data_url(),
        "closest_reference": {"id": closest["reference"], "similarity": closest["similarity"]},
    }
    if array is None:  # deleted or unreadable since: the rest of the explanation stands
        return explained
    explained["closest_reference"]["preview"] = _png_data_url(
        Image.fromarray((255 - array * 255).round().astype(np.uint8), mode="L")
    )
    ink_q, ink_r = questioned.signature.array, array
    overlay = np.stack([1 - ink_r, 1 - np.maximum(ink_q, ink_r), 1 - ink_q], axis=-1)  # red: questioned only
    explained["overlay"] = _png_data_url(Image.fromarray((overlay * 255).round().astype(np.uint8), mode="RGB"))
    return explained


def encoder_activate(*, key: str) -> str:
    """Make ``key`` the encoder compare and verify use (pretrained, or trained here and
    ready). References get their vectors under it when first needed."""
    spec = encoder_spec(key)
    ActiveEncoder.objects.update_or_create(pk=1, defaults={"key": spec.key})
    return spec.key


TRAIN_TASK = "signatures.tasks.encoder_train"
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def encoder_training_validate(
    *, sources: list[Source], epochs: int | None = None, key: str | None = None, activate: bool = False,
    loss: str = "triplet", seed: int = 0, minutes: float | None = None,
) -> dict[str, object]:  # fmt: skip
    """Check what can be checked at once - the key, the settings, and that each source holds
    signatures in its layout, of enough writers in all - and return the run's fields."""
    from signatures.datasets import sources_load

    if not key:
        key = f"signet-{timezone.now():%Y%m%d-%H%M%S}"
    if not _KEY.match(key):
        raise ServiceError("invalid_key", "key: lower-case letters, digits, '-' and '_' (at most 64).", field="key")
    if key in PRETRAINED or SignatureEncoder.objects.filter(key=key).exists():
        raise ServiceError("duplicate_key", f"A signature encoder '{key}' exists already.", field="key",
                           status_code=409)  # fmt: skip
    if loss not in ("triplet", "contrastive"):
        raise ServiceError("invalid_loss", "loss must be 'triplet' or 'contrastive'.", field="loss")
    config: dict[str, object] = {"epochs": DEFAULT_EPOCHS if epochs is None else epochs, "loss": loss, "seed": seed}
    if not 1 <= config["epochs"] <= 500:
        raise ServiceError("invalid_epochs", "epochs must be between 1 and 500.", field="epochs")
    minutes = DEFAULT_MINUTES if minutes is None else minutes
    if not 1 <= minutes <= 24 * 60:
        raise ServiceError("invalid_minutes", "minutes (the time budget) must be between 1 and 1440.",
                           field="minutes")  # fmt: skip
    config["minutes"] = float(minutes)
    sources = [Source(source.layout, Path(source.root).resolve()) for source in sources]
    if len({source.root for source in sources}) < len(sources):
        raise ServiceError("invalid", "data: the same folder is named twice.", field="data")
    samples = sources_load(sources)
    writers = {sample.writer for sample in samples if sample.label == "genuine"}
    if len(writers) < 3:
        names = ", ".join(source.root.name for source in sources)
        raise ServiceError("too_few_writers", f"Training needs genuine signatures of at least 3 writers (2 to learn "
                           f"from, 1 to validate on); {names} has {len(writers)}.", field="data")  # fmt: skip
    return {"key": key, "sources": [source.as_dict() for source in sources], "config": config,
            "activate_when_done": activate}  # fmt: skip


def encoder_training_create(**options: object) -> SignatureEncoder:
    """Record a training run (queued), after ``encoder_training_validate``."""
    return training_run_create(SignatureEncoder, fields=encoder_training_validate(**options),
                               what="A signature encoder")  # fmt: skip


def encoder_training_start(**options: object) -> SignatureEncoder:
    """Record a training run and queue it for a worker (queue ``embed``)."""
    with transaction.atomic():
        encoder = encoder_training_create(**options)
        transaction.on_commit(lambda: task_send(TRAIN_TASK, encoder.pk), robust=True)
    return encoder


def _encoder_update(encoder_id: int, **fields: object) -> None:
    training_run_touch(SignatureEncoder, pk=encoder_id, **fields)


def encoder_training_run(*, encoder_id: int) -> SignatureEncoder | None:
    """Train a queued encoder (``simsite.training_runs``: claimed once, failed with the reason
    whatever goes wrong): read and preprocess the data, split it by writer, train, calibrate
    the threshold on the validation writers, save weights and plots, and register the encoder
    (activating it if asked)."""
    return training_run_execute(SignatureEncoder, pk=encoder_id, first_message="reading the signatures",
                                train=_encoder_train)  # fmt: skip


def _encoder_train(encoder: SignatureEncoder, saved: list[str]) -> None:
    from signatures import training
    from signatures.calibration import calibration_measure
    from signatures.datasets import dataset_arrays, dataset_fingerprint, sources_load, writer_split
    from signatures.encoders import network_embed
    from signatures.plots import evaluation_plots, training_plot

    samples = sources_load([Source(source["layout"], Path(source["data"])) for source in encoder.sources])
    fingerprint = dataset_fingerprint(samples)
    arrays, kept, skipped = dataset_arrays(samples)
    config = training.TrainingConfig(**encoder.config)
    train_writers, val_writers = writer_split(kept, fraction=VALIDATION_FRACTION, seed=config.seed)
    if not train_writers or not val_writers:
        raise ServiceError("too_few_writers", "Training needs readable signatures of at least 3 writers.",
                           field="data")  # fmt: skip

    def subset(writers: set[str]) -> tuple[np.ndarray, list[str], list[str]]:
        index = [i for i, sample in enumerate(kept) if sample.writer in writers]
        return (np.stack([arrays[i] for i in index]), [kept[i].writer for i in index],
                [kept[i].label for i in index])  # fmt: skip

    validation = subset(val_writers)

    def progress(epoch: int, measured: dict[str, float]) -> None:
        if epoch == 0:
            fraction = 0.3 * measured["prepared"]
            message = f"preparing augmented copies ({measured['prepared']:.0%})"
        else:
            fraction = 0.3 + 0.6 * epoch / config.epochs
            message = f"epoch {epoch}/{config.epochs}: loss {measured['loss']:.3f}, " \
                      f"validation EER {measured['val_eer']:.3f}"  # fmt: skip
        _encoder_update(encoder.pk, progress=round(fraction, 4), message=message[:300])

    training_set = subset(train_writers)
    result = training.train(*training_set, validation=validation, config=config, progress=progress)
    _encoder_update(encoder.pk, progress=0.9, message="calibrating on the validation writers")
    net = training.trained_network(result)
    thresholds, results, scores = training.calibrate(net, *validation)
    threshold = thresholds["1"]
    # The background set: the training writers' signatures, genuine and forged, the negatives
    # of every signer's own model (signatures.writer_models). With the forgeries, the held-out
    # writers' EER with 5 references fell from 0.112 to 0.102 on CEDAR, 0.117 to 0.106 on the
    # Dutch set and 0.156 to 0.140 on SVC2004.
    background = network_embed(net, list(training_set[0])).astype(np.float32)
    calibration = calibration_measure(network_embed(net, list(validation[0])), validation[1], validation[2],
                                      background=background, similarity_dim=config.dim)  # fmt: skip

    folder = f"models/signatures/{encoder.key}"
    saved.append(default_storage.save(f"{folder}/weights.pt", ContentFile(training.weights_file(result))))
    saved.append(default_storage.save(f"{folder}/background.npy", ContentFile(_npy(background))))
    plots = {"training": training_plot(result.curves, best_epoch=result.best_epoch, key=encoder.key),
             **evaluation_plots(scores, lambda count: thresholds[str(count)], encoder.key)}  # fmt: skip
    plot_names = {}
    for name, png in plots.items():
        plot_names[name] = default_storage.save(f"{folder}/{name}.png", ContentFile(png))
        saved.append(plot_names[name])
    kind = "skilled" if "skilled" in results["1_references"] else "random"
    per_source = {
        label: {"fingerprint": dataset_fingerprint([s for s in samples if s.source == label]),
                "signatures": sum(1 for s in kept if s.source == label),
                "training_writers": sum(1 for w in train_writers if w.startswith(f"{label}/")),
                "validation_writers": sum(1 for w in val_writers if w.startswith(f"{label}/"))}
        for label in dict.fromkeys(sample.source for sample in samples)
    }  # fmt: skip
    metrics = {
        "dataset": f"{encoder.sources_text()}, {len(val_writers)} validation writers",
        "eer": results["1_references"][kind]["eer"],
        "auc": results["1_references"][kind]["auc"],
        "eer_5_references_max": results.get("5_references", {}).get(kind, {}).get("eer"),
        "random_forgery_eer": results["1_references"].get("random", {}).get("eer"),
        "validation": results,
        "calibrated_eer": {
            mode: {count: table["eer"] for count, table in tables.items()} for mode, tables in calibration.items()
        },  # fmt: skip
        "sources": per_source,
        "training_writers": sorted(train_writers),
        "validation_writers": sorted(val_writers),
        "training_writer_count": len(train_writers),
        "signatures": len(kept),
        "skipped": len(skipped),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves.get("loss", [])),
        "thresholds": {count: round(value, 4) for count, value in thresholds.items()},
        "device": str(training.embedding_device()),
        "similarity_dim": config.dim,
    }
    with transaction.atomic():
        SignatureEncoder.objects.filter(pk=encoder.pk).update(
            status=SignatureEncoder.Status.SUCCEEDED, progress=1.0, message="", dim=net.descriptor_dim,
            threshold=round(threshold, 4), metrics=metrics, curves=result.curves, weights=saved[0],
            background=saved[1], calibration=calibration, plots=plot_names, fingerprint=fingerprint,
            seconds=round(result.seconds, 1), finished_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        if encoder.activate_when_done:
            encoder_activate(key=encoder.key)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encoder_training_fail(*, encoder_id: int, error: str) -> None:
    training_run_fail(SignatureEncoder, pk=encoder_id, error=error)


def encoder_delete(*, encoder: SignatureEncoder) -> None:
    """Delete a trained encoder, its files and the reference vectors computed with it; the
    active one cannot be deleted (activate another first)."""
    if encoder.key == active_encoder_key():
        raise ServiceError("encoder_active", f"'{encoder.key}' is the active encoder; activate another one first.",
                           status_code=409)  # fmt: skip
    if encoder.status == SignatureEncoder.Status.RUNNING:
        raise ServiceError("encoder_running", f"'{encoder.key}' is being trained; wait for it to end.",
                           status_code=409)  # fmt: skip
    names = [name for name in [encoder.weights, encoder.background, *encoder.plots.values()] if name]
    with transaction.atomic():
        ReferenceVector.objects.filter(encoder=encoder.key).delete()
        encoder.delete()
        for name in names:  # each on its own: one that cannot be deleted is logged, the rest still go
            transaction.on_commit(lambda name=name: default_storage.delete(name), robust=True)


def encoder_reconcile() -> dict[str, int]:
    """Periodic (Celery beat): re-send training runs whose message was lost; fail those whose
    worker stopped reporting (killed, out of memory)."""
    stalled, resent = training_runs_reconcile(
        SignatureEncoder, stall_seconds=settings.SIGNATURE_TRAINING_STALL_SECONDS, task=TRAIN_TASK, queue="embed"
    )
    return {"resent": resent, "stalled": stalled}


def signature_files_resolve(*, path: str, field: str) -> bytes:
    """Read a file the earlier tool's clients name by path: only inside SIGNATURE_FILES_ROOT,
    after resolving symlinks and '..'; anything else is refused."""
    root = settings.SIGNATURE_FILES_ROOT
    if root is None:
        raise ServiceError("path_not_allowed", "File paths need SIGNATURE_FILES_ROOT to be set; upload the images.",
                           field=field, status_code=403)  # fmt: skip
    if not path or "\x00" in path or len(path) > 1024:
        raise ServiceError("path_invalid", "The file path is empty, too long or contains a NUL byte.", field=field)
    resolved = resolve_under_root(root, path)
    if resolved is None:
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
