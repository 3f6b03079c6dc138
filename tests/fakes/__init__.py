"""Loopback fakes of the Slack Web API and the Oxen.ai API (DESIGN.md, "Test harness")."""
