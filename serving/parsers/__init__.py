"""Parsers that sit between the engine's text stream and a dialect's encoder.

Each kind (tool calls today, reasoning later) is a registry of small modules chosen by name.
"""
