"""Tests of the examples as products: real processes on loopback."""
