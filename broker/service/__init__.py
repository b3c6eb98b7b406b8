"""The broker service: handlers for submissions, claims and events, the outbox relay, the loop."""
