"""Operations on OpenStack and on nodes: plain, idempotent functions that know nothing of the bus."""
