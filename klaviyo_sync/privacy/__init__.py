"""Erasure requests: forgetting a person in Klaviyo and in our own state, and the
tombstones that keep them forgotten. Built by the wiring (app.py: ``App.forgetter``)."""
