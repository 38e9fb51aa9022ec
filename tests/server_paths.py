"""No answer names a server path (issue: leaked folders tell an attacker the machine's layout):
rows that name server folders, and the paths no response may contain."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT


def rows_naming_server_folders(settings, tmp_path) -> None:
    """Training runs whose data folders are server paths, under the roots and outside them."""
    from search.models import TrainedModel
    from signatures.models import SignatureEncoder

    settings.EMBEDDING_TRAINING_ROOT = tmp_path / "training-root"
    settings.SIGNATURE_TRAINING_ROOT = tmp_path / "signature-root"
    settings.CATALOG_IMPORT_ROOT = tmp_path / "import-root"
    settings.SIGNATURE_FILES_ROOT = tmp_path / "signature-files"
    for key, folder in [("in_root", settings.EMBEDDING_TRAINING_ROOT / "shoes"), ("outside", tmp_path / "elsewhere")]:
        TrainedModel.objects.create(key=key, base="efficientnet_lite0", source=str(folder), status="failed",
                                    message="stopped", metrics={"dataset": folder.name})  # fmt: skip
    scans = {"layout": "folders", "data": str(settings.SIGNATURE_TRAINING_ROOT / "scans")}
    SignatureEncoder.objects.create(key="bank", status="failed", message="stopped", sources=[scans])


def server_paths(settings) -> list[str]:
    """What no answer may contain."""
    roots = [ROOT, settings.MEDIA_ROOT, settings.PRIVATE_MEDIA_ROOT, settings.EMBEDDING_TRAINING_ROOT,
             settings.SIGNATURE_TRAINING_ROOT, settings.CATALOG_IMPORT_ROOT, settings.SIGNATURE_FILES_ROOT]  # fmt: skip
    # The test's own temporary folder holds the others: no answer names it either.
    return sorted({str(Path(root)) for root in roots if root} | {str(Path(settings.MEDIA_ROOT).parent)})
