"""The payment flow, "order paid, change its status", with real processes.

See ``README.md`` in this folder; run it with ``python -m examples.payment_flow demo``.
"""
