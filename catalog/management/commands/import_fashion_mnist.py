from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from catalog.fashion_mnist import CLASSES, DEFAULT_PATH, balanced_indices, fashion_mnist_load, png_bytes
from catalog.images import image_validate
from catalog.models import Product
from catalog.services import images_changed_send, product_create
from simsite.errors import ServiceError

# A plausible price range per class, so that price filters mean something in the demo.
_PRICES = (15, 40, 35, 50, 90, 30, 25, 60, 45, 80)
_CHUNK = 200


class Command(BaseCommand):
    help = (
        "Import Fashion-MNIST photos (Debian's dataset-fashion-mnist) as catalog products: category = the class, "
        "sku fmnist-<split>-<index>, a made-up price. Balanced over the 10 classes; products already there are "
        "skipped, so it can be run again. The images are embedded in the background like any new product."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--limit", type=int, default=2000, help="how many photos (default 2000)")
        parser.add_argument("--split", choices=["train", "test"], default="train", help="the official split")
        parser.add_argument("--path", type=Path, default=DEFAULT_PATH, help=f"the IDX files (default {DEFAULT_PATH})")

    def handle(self, *args: Any, limit: int, split: str, path: Path, **options: Any) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        try:
            images, labels = fashion_mnist_load(split=split, folder=path)
        except ServiceError as error:
            raise CommandError(error.message) from None
        chosen = balanced_indices(labels, limit)
        existing = set(Product.objects.filter(sku__startswith=f"fmnist-{split}-").values_list("sku", flat=True))
        rng = np.random.default_rng(0)
        factors = rng.uniform(0.7, 1.3, size=len(labels))
        created = skipped = 0
        for start in range(0, len(chosen), _CHUNK):
            with transaction.atomic():
                ids = []
                for index in chosen[start : start + _CHUNK]:
                    sku = f"fmnist-{split}-{index:05d}"
                    if sku in existing:
                        skipped += 1
                        continue
                    label = CLASSES[int(labels[index])]
                    price = Decimal(str(round(_PRICES[int(labels[index])] * float(factors[index]), 2)))
                    image = image_validate(data=png_bytes(images[index]), filename=f"{sku}.png")
                    product = product_create(sku=sku, name=f"{label} #{index}", category=label, price=price,
                                             image=image, notify=False)  # fmt: skip
                    ids.append(product.pk)
                    created += 1
                images_changed_send(product_ids=ids)
            self.stderr.write(f"{min(start + _CHUNK, len(chosen))}/{len(chosen)}")
        self.stdout.write(f"created {created} products, skipped {skipped} already imported ({split} split)")
