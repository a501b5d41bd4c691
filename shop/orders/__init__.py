"""Orders: checkout of the cart (atomic, stock-safe, idempotent), listing, cancellation."""
