"""The person's data rights: per-person keys, erasure, consent withdrawal, audited reads."""
