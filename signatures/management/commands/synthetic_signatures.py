from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from signatures.synthetic import synthetic_dataset


class Command(BaseCommand):
    help = "Write synthetic signatures (pen strokes) in the `folders` layout: for a demo on a fresh machine."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--writers", type=int, default=20)
        parser.add_argument("--genuine", type=int, default=10)
        parser.add_argument("--forged", type=int, default=10)

    def handle(self, *args: Any, out: Path, writers: int, genuine: int, forged: int, **options: Any) -> None:
        synthetic_dataset(out, writers=writers, genuine=genuine, forged=forged)
        self.stdout.write(f"{writers} writers x ({genuine} genuine + {forged} forged) in {out} (layout: folders)")
