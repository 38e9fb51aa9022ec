"""Writes and decisions for signatures: compare, signers, references, verify, activation.

Signature files are content-addressed under ``signatures/`` (apart from catalog images, so
that deleting a catalog image never touches a signature on file).
"""

from __future__ import annotations

import base64
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

from catalog.images import IntakeImage, image_validate, read_limited
from catalog.storage import content_discard, content_lock, content_save
from signatures.models import ActiveEncoder, Reference, ReferenceVector, SignatureEncoder, Signer, Verification
from signatures.preprocessing import SignatureImage, signature_preprocess
from signatures.registry import PRETRAINED, EncoderSpec
from signatures.selectors import active_encoder_key, encoder_spec
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
VALIDATION_FRACTION = 0.25


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
    vectors = _embed(spec, [first.signature.array, second.signature.array])
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
    return created, rejected


def reference_delete(*, reference: Reference) -> None:
    name, sha = reference.file.name, reference.sha256
    with transaction.atomic():
        reference.delete()
        transaction.on_commit(lambda: _discard(name, sha), robust=True)


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


def signature_verify(
    *, signer: Signer, questioned: SignatureInput, threshold: float | None = None, user: object = None
) -> Verification:
    """Score a questioned signature against the signer's references and decide.

    The score is the highest similarity to any reference: with 5 references it gave a
    skilled-forgery EER of 0.210 against 0.240 for the mean (SVC2004, default encoder). The
    threshold is the encoder's for that many references (README, "Signatures").
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
    refs = _reference_vectors(references, spec)
    vector = _embed(spec, [questioned.signature.array])[0]
    similarities = refs @ vector
    score = round(float(similarities.max()), 4)
    cut = _threshold(threshold, spec.threshold_for(len(references)))
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
    """Make ``key`` the encoder compare and verify use (pretrained, or trained here and
    ready). References get their vectors under it when first needed."""
    spec = encoder_spec(key)
    ActiveEncoder.objects.update_or_create(pk=1, defaults={"key": spec.key})
    return spec.key


TRAIN_TASK = "signatures.tasks.encoder_train"
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def encoder_training_validate(
    *, data: Path, layout: str, epochs: int | None = None, key: str | None = None, activate: bool = False,
    loss: str = "triplet", seed: int = 0,
) -> dict[str, object]:  # fmt: skip
    """Check what can be checked at once - the key, the settings, and that the folder holds
    signatures of enough writers in that layout - and return the run's fields."""
    from signatures.datasets import dataset_load

    if not key:
        key = f"signet-{timezone.now():%Y%m%d-%H%M%S}"
    if not _KEY.match(key):
        raise ServiceError("invalid_key", "key: lower-case letters, digits, '-' and '_' (at most 64).", field="key")
    if key in PRETRAINED or SignatureEncoder.objects.filter(key=key).exists():
        raise ServiceError("duplicate_key", f"A signature encoder '{key}' exists already.", field="key",
                           status_code=409)  # fmt: skip
    if loss not in ("triplet", "contrastive"):
        raise ServiceError("invalid_loss", "loss must be 'triplet' or 'contrastive'.", field="loss")
    config = {"epochs": DEFAULT_EPOCHS if epochs is None else epochs, "loss": loss, "seed": seed}
    if not 1 <= config["epochs"] <= 500:
        raise ServiceError("invalid_epochs", "epochs must be between 1 and 500.", field="epochs")
    data = Path(data).resolve()
    samples = dataset_load(root=data, layout=layout)
    writers = {sample.writer for sample in samples if sample.label == "genuine"}
    if len(writers) < 3:
        raise ServiceError("too_few_writers", f"Training needs genuine signatures of at least 3 writers (2 to learn "
                           f"from, 1 to validate on); {data.name} has {len(writers)}.", field="data")  # fmt: skip
    return {"key": key, "data": str(data), "layout": layout, "config": config, "activate_when_done": activate}


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
    from signatures.datasets import dataset_arrays, dataset_fingerprint, dataset_load, writer_split
    from signatures.plots import evaluation_plots, training_plot

    samples = dataset_load(root=Path(encoder.data), layout=encoder.layout)
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
            fraction = 0.3 + 0.65 * epoch / config.epochs
            message = f"epoch {epoch}/{config.epochs}: loss {measured['loss']:.3f}, " \
                      f"validation EER {measured['val_eer']:.3f}"  # fmt: skip
        _encoder_update(encoder.pk, progress=round(fraction, 4), message=message[:300])

    result = training.train(*subset(train_writers), validation=validation, config=config, progress=progress)
    _encoder_update(encoder.pk, progress=0.95, message="calibrating the threshold on the validation writers")
    thresholds, results, scores = training.calibrate(training.trained_network(result), *validation)
    threshold = thresholds["1"]

    folder = f"models/signatures/{encoder.key}"
    saved.append(default_storage.save(f"{folder}/weights.pt", ContentFile(training.weights_file(result))))
    plots = {"training": training_plot(result.curves, best_epoch=result.best_epoch, key=encoder.key),
             **evaluation_plots(scores, lambda count: thresholds[str(count)], encoder.key)}  # fmt: skip
    plot_names = {}
    for name, png in plots.items():
        plot_names[name] = default_storage.save(f"{folder}/{name}.png", ContentFile(png))
        saved.append(plot_names[name])
    kind = "skilled" if "skilled" in results["1_references"] else "random"
    metrics = {
        "dataset": f"{Path(encoder.data).name} ({encoder.layout}), {len(val_writers)} validation writers",
        "eer": results["1_references"][kind]["eer"],
        "auc": results["1_references"][kind]["auc"],
        "eer_5_references_max": results.get("5_references", {}).get(kind, {}).get("eer"),
        "random_forgery_eer": results["1_references"].get("random", {}).get("eer"),
        "validation": results,
        "training_writers": sorted(train_writers),
        "validation_writers": sorted(val_writers),
        "training_writer_count": len(train_writers),
        "signatures": len(kept),
        "skipped": len(skipped),
        "best_epoch": result.best_epoch,
        "thresholds": {count: round(value, 4) for count, value in thresholds.items()},
        "device": str(training.embedding_device()),
    }
    with transaction.atomic():
        SignatureEncoder.objects.filter(pk=encoder.pk).update(
            status=SignatureEncoder.Status.SUCCEEDED, progress=1.0, message="", dim=config.dim,
            threshold=round(threshold, 4), metrics=metrics, curves=result.curves, weights=saved[0],
            plots=plot_names, fingerprint=fingerprint, seconds=round(result.seconds, 1),
            finished_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        if encoder.activate_when_done:
            encoder_activate(key=encoder.key)


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
    names = [name for name in [encoder.weights, *encoder.plots.values()] if name]
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
