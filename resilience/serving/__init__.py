"""How Bulwark is served: worker processes, and (with the serving work) traffic classes and bulkheads."""
