from resilience.errors import AppError


class CartEmptyError(AppError):
    code = "cart_empty"
    http_status = 400
    message = "Your cart is empty; add items before checking out."


class OrderNotCancellableError(AppError):
    code = "order_not_cancellable"
    http_status = 409

    def __init__(self, status: str) -> None:
        super().__init__(
            f"Only an order pending payment can be cancelled; this one is {status}.", detail={"status": status}
        )
