"""Synthetic signatures drawn as pen strokes: for tests and for a demo on a fresh machine.

Each writer has a smooth trajectory of their own (seeded by the writer number); a genuine
sample redraws it with small natural variation (jitter, slant, scale, pen width); a
"skilled forgery" follows the same shape with larger deviations and a slight tremor, as a
forger copying it would. Not a substitute for real signatures in evaluation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _curve(points: np.ndarray, steps: int = 14) -> np.ndarray:
    """Catmull-Rom spline through the control points."""
    padded = np.vstack([points[0], points, points[-1]])
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
            )
    out.append(points[-1])
    return np.asarray(out)


def _writer_strokes(writer: int) -> list[np.ndarray]:
    rng = np.random.default_rng(10_007 * (writer + 1))
    strokes = []
    x = 20.0
    for _ in range(int(rng.integers(2, 4))):
        count = int(rng.integers(10, 18))
        steps = rng.uniform(-12, 34, count)  # some steps go back: loops, as handwriting has
        xs = x + np.cumsum(steps)
        ys = 140 + 70 * np.sin(np.cumsum(rng.uniform(0.6, 1.9, count))) * rng.uniform(0.4, 1.0, count)
        strokes.append(np.column_stack([xs, ys]))
        x = xs.max() + rng.uniform(10, 30)
    # Fit the whole signature in the page, keeping its proportions.
    span = max(x - 20.0, 1.0)
    return [np.column_stack([20 + (s[:, 0] - 20) * min(1.0, 520 / span), s[:, 1]]) for s in strokes]


def synthetic_signature(writer: int, sample: int, *, forged: bool = False) -> bytes:
    """A PNG of one signature of ``writer`` (deterministic for the same arguments)."""
    rng = np.random.default_rng([writer, sample, int(forged)])
    jitter, tremor = (6.0, 0.7) if forged else (2.0, 0.0)
    angle = np.deg2rad(rng.normal(0, 4 if forged else 2))
    scale = rng.normal(1.0, 0.08 if forged else 0.04)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    picture = Image.new("L", (640, 280), int(rng.integers(235, 256)))
    draw = ImageDraw.Draw(picture)
    width = int(rng.integers(2, 5))
    for stroke in _writer_strokes(writer):
        moved = stroke + rng.normal(0, jitter, stroke.shape)
        line = _curve(moved) @ rotation.T + np.array([40, 0])
        if tremor:
            line += rng.normal(0, tremor, line.shape)
        draw.line([tuple(point) for point in line], fill=int(rng.integers(0, 60)), width=width, joint="curve")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_dataset(root: Path, *, writers: int, genuine: int = 10, forged: int = 10) -> Path:
    """Write ``<writer>/genuine|forged/*.png`` (the ``folders`` layout) under ``root``."""
    for writer in range(writers):
        for label, count in (("genuine", genuine), ("forged", forged)):
            folder = root / f"writer{writer:03d}" / label
            folder.mkdir(parents=True, exist_ok=True)
            for sample in range(count):
                (folder / f"{sample:02d}.png").write_bytes(
                    synthetic_signature(writer, sample, forged=label == "forged")
                )
    return root
