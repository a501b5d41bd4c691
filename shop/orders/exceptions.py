from core.exceptions import AppError


class CartEmptyError(AppError):
    code = "cart_empty"
    message = "Your cart is empty; add items before checking out."


class OrderNotCancellableError(AppError):
    code = "order_not_cancellable"

    def __init__(self, status: str) -> None:
        super().__init__(
            f"Only an order pending payment can be cancelled; this one is {status}.", detail={"status": status}
        )
