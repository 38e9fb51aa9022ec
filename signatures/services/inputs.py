"""What every signature operation starts from: a validated upload (or a file the earlier tool's
clients name by path) with its preprocessed image, its vectors, and its file in the private
storage (content-addressed under ``signatures/``, apart from catalog images, so that deleting a
catalog image never touches a signature on file)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from catalog.images import IntakeImage, image_validate, read_limited
from catalog.storage import content_discard, content_save
from signatures.models import (
    Reference,
    Verification,
)
from signatures.preprocessing import SignatureImage, signature_preprocess
from signatures.registry import EncoderSpec
from simsite.errors import ServiceError
from simsite.files import private_storage, resolve_under_root


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


def signatures_embed(spec: EncoderSpec, signatures: Sequence[SignatureImage]) -> np.ndarray:
    """The signatures' vectors under ``spec``, each framed at the size its encoder takes."""
    from signatures.encoders import get_encoder  # torch stays out of the web process until needed

    encoder = get_encoder(spec)
    return encoder.embed([signature.at(encoder.input_shape) for signature in signatures])


def signature_file_name(image: IntakeImage) -> str:
    return f"signatures/{image.sha256[:2]}/{image.sha256}.{image.extension}"


def signature_store(image: IntakeImage) -> str:
    """Signatures go to the private storage: never under a public URL."""
    return content_save(name=signature_file_name(image), data=image.data, storage=private_storage())


def signature_discard(name: str, sha256: str) -> None:
    content_discard(
        names=[name],
        sha256=sha256,
        in_use=lambda: (
            Reference.objects.filter(file=name).exists() or Verification.objects.filter(questioned=name).exists()
        ),  # fmt: skip
        storage=private_storage(),
    )


def reference_read(reference: Reference) -> SignatureImage:
    """A reference's preprocessed signature, read from the private storage. A file missing or
    damaged since enrolment is a 409 naming the reference (not a fault of the request's upload)."""
    try:
        with private_storage().open(reference.file.name, "rb") as handle:
            return signature_preprocess(handle.read())
    except FileNotFoundError:
        raise ServiceError("reference_missing", f"The file of reference {reference.pk} is missing from storage; "
                           "delete it and enrol it again.", status_code=409) from None  # fmt: skip
    except (OSError, ServiceError):
        raise ServiceError("reference_unreadable", f"The file of reference {reference.pk} cannot be read as a "
                           "signature any more; delete it and enrol it again.", status_code=409) from None  # fmt: skip


def reference_array(reference: Reference) -> np.ndarray | None:
    """``reference_read``, or None where it cannot be read (for what can do without it)."""
    try:
        return reference_read(reference).array
    except ServiceError:
        return None


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
