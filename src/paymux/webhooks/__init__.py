"""Merchant webhooks: endpoints, deliveries and their attempts, signed with Standard Webhooks.

Invariants: every committed event reaches every endpoint subscribed to it when it was relayed, or ends in the
dead-letter state (at least once; receivers deduplicate by `webhook-id`, the event id); one delivery is sent by
one worker at a time (endpoint leases), so an endpoint's first attempts arrive in event order; an endpoint URL
must resolve to public addresses at registration and again at every connect.
"""
