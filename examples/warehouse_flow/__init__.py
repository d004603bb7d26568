"""The order flow, "add a product to an order", on real processes.

Run ``python -m examples.warehouse_flow demo`` (or ``up``); see the README beside this file.
"""
