"""Reliability promises proved against real server processes, collectors and sinks."""
