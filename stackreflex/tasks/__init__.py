"""Operations on OpenStack and on nodes: plain, idempotent functions that know neither the bus
nor the audit log (an import-linter contract keeps it so)."""
