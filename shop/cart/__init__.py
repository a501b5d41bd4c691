"""One cart per user: add (merging the same product), change quantity, remove, view with totals."""
