from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100, unique=True)
    pid = models.IntegerField()  # the process that wrote it


class Batch(models.Model):
    size = models.IntegerField()
