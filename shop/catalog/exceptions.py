from __future__ import annotations

from dataclasses import asdict, dataclass

from core.exceptions import AppError


@dataclass(frozen=True)
class Shortage:
    product_id: int
    sku: str
    requested: int
    available: int


class OutOfStockError(AppError):
    code = "out_of_stock"
    message = "Not enough stock for some items; see detail.items."

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__(detail={"items": [asdict(shortage) for shortage in shortages]})
        self.shortages = shortages
