"""Load the demo catalog (idempotent: a product whose SKU exists is left untouched)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from shop.catalog.demo import CATEGORIES, demo_products
from shop.catalog.services import category_ensure, product_ensure


class Command(BaseCommand):
    help = (
        "Load the demo catalog: 6 categories, 60 products. Safe to run again: existing products are left as they are."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        categories = {name: category_ensure(name=name) for name in CATEGORIES}
        products = list(demo_products())
        created = 0
        for demo in tqdm(
            products, desc="seeding products", unit="product", file=sys.stderr, disable=options["verbosity"] == 0
        ):
            _, was_created = product_ensure(
                sku=demo.sku,
                name=demo.name,
                category=categories[demo.category],
                price=demo.price,
                stock=demo.stock,
                description=demo.description,
            )
            created += was_created
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo catalog ready: {len(categories)} categories, {len(products)} products ({created} new)."
            )
        )
