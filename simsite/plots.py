"""matplotlib without a display: figures to PNG bytes (the apps' plots build on this)."""

from __future__ import annotations

import io


def pyplot():  # noqa: ANN201 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def png(figure: object) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return buffer.getvalue()
