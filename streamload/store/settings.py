"""Endpoint, region and credentials of a bucket, from the standard AWS environment variables and files only.

Nothing else can configure them (no option, no manifest field, no URL part), so a dataset folder, a
manifest or a command line never holds a secret, and what works for the ``aws`` CLI works here:

- keys: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), else the profile's
  ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token`` in the credentials file, else
  in the config file; with none of them, the client's own chain (web identity, container, instance
  metadata) is left to find some;
- profile: ``AWS_PROFILE`` (else ``AWS_DEFAULT_PROFILE``, else ``default``); files: ``AWS_CONFIG_FILE``
  (``~/.aws/config``) and ``AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``);
- region: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the profile's ``region``;
- endpoint: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, then the profile's ``endpoint_url``.

Profiles that get keys from SSO, ``credential_process`` or a role to assume are not read here: export
their keys first (``aws configure export-credentials --format env``). The secret and the token never
appear in ``repr`` or ``str``; :meth:`S3Settings.scrub` removes them from any text that might carry
them (a server's error message) before it goes into an exception.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidOptionError

_KEY_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


@dataclass(frozen=True)
class S3Settings:
    """What a client needs to reach a bucket; secrets kept out of ``repr``."""

    endpoint: str | None = None
    region: str | None = None
    profile: str = "default"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    keys_from: str = "none"  # "environment", "credentials file", "config file" or "none": for messages

    def scrub(self, text: str) -> str:
        """``text`` with the secret key and session token (if any) replaced by ``***``."""
        for secret in (self.secret_access_key, self.session_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def describe(self) -> str:
        """One line for messages: endpoint, region, profile and where the keys came from, no secret."""
        return (f"endpoint {self.endpoint or '(AWS default)'}, region {self.region or '(default)'}, "
                f"profile {self.profile}, keys from {self.keys_from}")


def _profile_section(parser: configparser.ConfigParser, profile: str, config_file: bool) -> dict[str, str]:
    """A profile's entries: ``[default]`` or ``[profile NAME]`` in the config file, ``[NAME]`` in credentials."""
    names = [profile] if not config_file else (["default"] if profile == "default" else [f"profile {profile}"])
    for name in names:
        if parser.has_section(name):
            return dict(parser.items(name))
    return {}


def _read_profile(path: Path, profile: str, config_file: bool) -> dict[str, str]:
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise InvalidOptionError(f"{path}: not a readable AWS {'config' if config_file else 'credentials'} file "
                                 f"({type(exc).__name__})") from None  # its text may hold a secret: not repeated
    return _profile_section(parser, profile, config_file)


def _keys(env: Mapping[str, str], credentials: dict[str, str], config: dict[str, str]) -> tuple[dict, str]:
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return {name: env.get(name.upper()) for name in _KEY_FIELDS}, "environment"
    for source, entries in (("credentials file", credentials), ("config file", config)):
        if entries.get("aws_access_key_id") and entries.get("aws_secret_access_key"):
            return {name: entries.get(name) for name in _KEY_FIELDS}, source
    return {}, "none"


def load_settings(env: Mapping[str, str] | None = None) -> S3Settings:
    """The settings the standard AWS variables and files give (``env``: os.environ by default)."""
    env = os.environ if env is None else env
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(env.get("HOME") or Path.home())
    config = _read_profile(Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"), profile, True)
    credentials = _read_profile(Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"),
                                profile, False)
    keys, keys_from = _keys(env, credentials, config)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or config.get("region")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or config.get("endpoint_url")
    return S3Settings(endpoint=endpoint or None, region=region or None, profile=profile,
                      access_key_id=keys.get("aws_access_key_id"), secret_access_key=keys.get("aws_secret_access_key"),
                      session_token=keys.get("aws_session_token") or None, keys_from=keys_from)
