"""The catalog: categories and products. Customers see active products only."""
