"""Shared machinery used by every fusion method; imports no method."""
