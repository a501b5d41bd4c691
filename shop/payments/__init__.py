"""Payments: one record per charge attempt target, collected through a pluggable gateway.

With no gateway configured (``PAYMENT_GATEWAY_URL`` unset) orders stay ``pending_payment``
and their payment stays ``pending``, to be collected later.
"""
