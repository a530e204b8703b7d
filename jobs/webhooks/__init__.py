"""Webhooks in the Standard Webhooks format (issue 26): subscriptions, an outbox of deliveries kept with the job
records, and the senders that deliver them at least once.

`model` (what a subscription and a delivery are, the retry rule), `store` (where they are kept), `destinations`
(where one may be sent: no server-side request forgery), `subscriptions` (making them), `events` (what each event's
data holds). The HTTP sender is an adapter of the workers' side: `workers.webhooks`.
"""
