"""Plumbing the two examples share.

`warehouse_flow` and `payment_flow` run the same way: a supervisor starts each service as a
uvicorn process on a free loopback port (`processes`), each service serves the same fault
switches (`faults`) and ``/healthz`` (`web`), both command lines take the same options
(`cli`), both save their settings in the run folder (`settings`), both embed failsafe's
Error-handling service and report to it the same way (`errors_service`), and both write
their traces to the run folder the same way (`telemetry`, which turns on failsafe's
OpenTelemetry integration), for `traces` to print as a tree. Each example keeps its own
domain logic, settings, wiring and services; only this plumbing is written once, here.
"""

__all__: list[str] = []
