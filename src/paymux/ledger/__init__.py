"""The double-entry ledger every money movement posts to: accounts, journal entries, postings, holds."""
