"""Events: the transactional outbox. Every state change writes its event row in the same transaction, so an
event exists if and only if its change committed. Delivery to merchants reads from here.
"""
