"""`django-admin enqueue_notes N`: a Batch row and N jobs, submitted only once the row is committed."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from notes.models import Batch
from spoold import run_background_job


class Command(BaseCommand):
    help = "Record a batch and submit one CreateNote job per note, after the transaction commits."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            batch = int(Batch.objects.create(size=options["count"]).pk)
            titles = [f"note-{batch}-{i}" for i in range(options["count"])]
            # Submitted inside the transaction, a job could run before the batch row is committed.
            transaction.on_commit(lambda: [run_background_job("CreateNote", "handle", [title, batch])
                                           for title in titles])
