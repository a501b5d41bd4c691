"""The e-commerce domain: catalog, accounts, cart, orders, payments. One Django app, one package per area."""
