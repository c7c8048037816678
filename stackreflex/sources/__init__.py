"""Event sources: what turns changes in the cloud into envelopes on the bus. Heat's events,
polled through its API (:mod:`.heat`), are the first; Nova and Heat notifications on the
OpenStack message bus are the obvious next one."""
