"""The reference applications: the order flow (warehouse_flow), the payment flow (payment_flow)."""
