"""Bootstrap functions for frameworks (SPEC §10, `bootstrap`): each is named in bgjobs.toml, never imported
by spoold itself, so a framework is needed only by the apps that use it."""
