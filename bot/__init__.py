"""Dreamboard: a Slack app for generating and iterating on images with Seedream 4.5 on Oxen.ai."""
