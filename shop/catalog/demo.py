"""The demo catalog: 6 categories x 10 products, deterministic so seeding twice changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

CATEGORIES: dict[str, list[str]] = {
    "Books": [
        "Atlas",
        "Cookbook",
        "Field Guide",
        "Novel",
        "Poetry",
        "Biography",
        "Dictionary",
        "Comic",
        "Travel Guide",
        "Workbook",
    ],
    "Electronics": [
        "Headphones",
        "USB-C Cable",
        "Power Bank",
        "Keyboard",
        "Mouse",
        "Webcam",
        "Speaker",
        "Charger",
        "Smart Plug",
        "E-Reader",
    ],
    "Garden": [
        "Trowel",
        "Watering Can",
        "Seed Kit",
        "Pruning Shears",
        "Hose",
        "Planter",
        "Gloves",
        "Rake",
        "Compost Bin",
        "Bird Feeder",
    ],
    "Home": ["Mug", "Blanket", "Lamp", "Cushion", "Candle", "Vase", "Clock", "Towel Set", "Doormat", "Shelf"],
    "Sports": [
        "Yoga Mat",
        "Water Bottle",
        "Jump Rope",
        "Dumbbell",
        "Tennis Balls",
        "Bike Light",
        "Running Cap",
        "Resistance Band",
        "Foam Roller",
        "Football",
    ],
    "Toys": [
        "Puzzle",
        "Kite",
        "Building Blocks",
        "Plush Bear",
        "Board Game",
        "Yo-Yo",
        "Train Set",
        "Marbles",
        "Paint Set",
        "Spinning Top",
    ],
}


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    category: str
    price: Decimal
    stock: int
    description: str


def demo_products() -> Iterator[DemoProduct]:
    for c_index, (category, names) in enumerate(CATEGORIES.items()):
        for p_index, name in enumerate(names):
            n = c_index * 10 + p_index
            yield DemoProduct(
                sku=f"{category[:3].upper()}-{p_index + 1:03d}",
                name=name,
                category=category,
                price=Decimal(5 + (n * 37) % 120) + Decimal("0.99"),
                stock=10 + (n * 13) % 90,
                description=f"A dependable {name.lower()} from our {category.lower()} range.",
            )
