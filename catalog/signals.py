"""What the catalog tells the rest of the application, without knowing who listens."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the transaction that stored new or changed images, with ``product_ids`` and
# ``gallery_ids`` (lists of primary keys). The search app queues their embedding in the
# same transaction (search/receivers.py), so a committed image always has its work recorded.
images_changed = Signal()
