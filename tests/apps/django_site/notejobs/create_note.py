"""A job that uses the ORM. Imported at the top: spoold imports job modules after the bootstrap."""

import os

from django.db import transaction
from notes.models import Batch, Note


class CreateNote:
    def handle(self, title: str, batch: int) -> int:
        # A read, then a write, in one transaction: on SQLite two workers doing this at once deadlock
        # ("database is locked") unless the transaction takes the write lock as it begins (README, "Django").
        with transaction.atomic():
            Batch.objects.get(pk=batch)  # submitted on commit: the batch is always there
            return int(Note.objects.create(title=title, pid=os.getpid()).pk)
