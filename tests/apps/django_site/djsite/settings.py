"""Settings of the test Django project: one app, SQLite set up for several processes writing at once."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "only-for-the-tests"
INSTALLED_APPS = ["notes"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            # Two workers write at once (README, "Django"): wait for the lock instead of failing at once,
            # take the write lock when a transaction begins (no deadlocked upgrade), and let readers and
            # the writer run together.
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
