from __future__ import annotations

import pytest

from signatures.synthetic import synthetic_signature
from tests import images

SVC2004 = images.SHARED_DATA / "signatures-svc2004"


def real_or_synthetic(writer: int, count: int, *, forged: bool = False) -> list[bytes]:
    """Real SVC2004 signatures of a writer (1-24) from ../shared/data when present, else
    synthetic ones."""
    folder = SVC2004 / f"user{writer}" / ("forged" if forged else "genuine")
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if len(files) == count:
        return [path.read_bytes() for path in files]
    return [synthetic_signature(writer, sample, forged=forged) for sample in range(count)]


@pytest.fixture
def signatures_root(settings, tmp_path):
    root = tmp_path / "signature-files"
    (root / "scans").mkdir(parents=True)
    for i, data in enumerate(real_or_synthetic(3, 2)):
        (root / "scans" / f"s{i}.png").write_bytes(data)
    (tmp_path / "outside.png").write_bytes(real_or_synthetic(4, 1)[0])
    settings.SIGNATURE_FILES_ROOT = root.resolve()
    return root


def cedar_dataset(root, *, writers: range, genuine: int, forged: int):
    """Synthetic writers in the CEDAR layout (full_org/original_<w>_<n>, full_forg/forgeries_<w>_<n>)."""
    for folder, prefix, count, is_forged in (("full_org", "original", genuine, False),
                                             ("full_forg", "forgeries", forged, True)):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
        for writer in writers:
            for n in range(count):
                data = synthetic_signature(writer, n, forged=is_forged)
                (root / folder / f"{prefix}_{writer}_{n + 1}.png").write_bytes(data)
    return root
