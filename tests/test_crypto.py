"""Encryption at rest: Secret, keys, the key file, binding to a row, rotation."""

from __future__ import annotations

import base64
import os
import pickle
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from mailconnect.config import load_config
from mailconnect.crypto import (
    KEYS_VARIABLE,
    Keyring,
    Secret,
    SecretBinding,
    SecretBindingError,
    SecretUndecryptable,
    create_key_file,
    generate_key,
    load_key_file,
    load_keyring,
    parse_key_list,
)
from mailconnect.errors import ConfigurationError

PASSWORD = "correct horse battery staple"
ROW = SecretBinding("tenant-a", "connection-1", "password")

keys = st.binary(min_size=32, max_size=32).map(base64.urlsafe_b64encode)
separators = st.sampled_from([",", ", ", " , ", ",\n", "\n", "\t,", ",,"])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("MAILCONNECT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILCONNECT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


# Secret


def test_secret_is_redacted_everywhere_but_reveal() -> None:
    secret = Secret(PASSWORD)
    assert secret.reveal() == PASSWORD
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert PASSWORD not in text
        assert "****" in text


def test_secret_compares_by_value_and_cannot_be_pickled_or_hashed() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    with pytest.raises(TypeError):
        pickle.dumps(Secret(PASSWORD))
    with pytest.raises(TypeError):
        hash(Secret(PASSWORD))


# Encryption and binding


def test_round_trip_with_unicode() -> None:
    keyring = Keyring([generate_key()])
    token = keyring.encrypt(Secret("pässwörd ✓"), ROW)
    assert keyring.decrypt(token, ROW) == Secret("pässwörd ✓")
    assert PASSWORD not in token


@pytest.mark.parametrize(
    "other",
    [
        SecretBinding("tenant-b", "connection-1", "password"),
        SecretBinding("tenant-a", "connection-2", "password"),
        SecretBinding("tenant-a", "connection-1", "oauth_refresh_token"),
    ],
    ids=["other-tenant", "other-connection", "other-purpose"],
)
def test_ciphertext_for_another_row_is_refused(other: SecretBinding) -> None:
    keyring = Keyring([generate_key()])
    token = keyring.encrypt(Secret(PASSWORD), ROW)
    with pytest.raises(SecretBindingError, match="another row") as caught:
        keyring.decrypt(token, other)
    assert PASSWORD not in str(caught.value)
    assert token not in str(caught.value)


def test_tampered_ciphertext_is_refused() -> None:
    keyring = Keyring([generate_key()])
    token = keyring.encrypt(Secret(PASSWORD), ROW)
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(SecretUndecryptable, match="missing") as caught:
        keyring.decrypt(flipped, ROW)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_garbage_and_foreign_fernet_tokens_are_refused() -> None:
    keyring = Keyring([generate_key()])
    with pytest.raises(SecretUndecryptable):
        keyring.decrypt("not a token ✗", ROW)
    key = generate_key()
    foreign = Fernet(key).encrypt(b"raw, no envelope").decode()
    with pytest.raises(SecretUndecryptable, match="format"):
        Keyring([key]).decrypt(foreign, ROW)


def test_two_keys_decrypt_old_ciphertexts_and_rotate_moves_to_the_first() -> None:
    old, new = generate_key(), generate_key()
    token = Keyring([old]).encrypt(Secret(PASSWORD), ROW)
    both = Keyring([new, old])
    assert both.decrypt(token, ROW) == Secret(PASSWORD)
    assert both.key_index(token) == 1
    rotated = both.rotate(token, ROW)
    assert both.key_index(rotated) == 0
    assert Keyring([new]).decrypt(rotated, ROW) == Secret(PASSWORD)
    with pytest.raises(SecretUndecryptable):
        Keyring([new]).decrypt(token, ROW)


def test_rotate_refuses_a_value_of_another_row() -> None:
    keyring = Keyring([generate_key()])
    token = keyring.encrypt(Secret(PASSWORD), ROW)
    with pytest.raises(SecretBindingError):
        keyring.rotate(token, SecretBinding("tenant-b", "connection-1", "password"))


def test_missing_key_is_detected() -> None:
    token = Keyring([generate_key()]).encrypt(Secret(PASSWORD), ROW)
    stranger = Keyring([generate_key()])
    assert stranger.key_index(token) is None
    with pytest.raises(SecretUndecryptable, match="key that encrypted it is missing"):
        stranger.decrypt(token, ROW)


def test_keyring_repr_and_fingerprints_reveal_no_key() -> None:
    key = generate_key()
    keyring = Keyring([key, generate_key()])
    assert repr(keyring) == "Keyring(2 keys)"
    ids = keyring.fingerprints()
    assert len(set(ids)) == 2
    assert all(len(i) == 12 and i not in key.decode() for i in ids)
    assert Keyring([key]).fingerprints()[0] == ids[0]


# The key list


@given(st.lists(keys, min_size=1, max_size=5), st.data())
def test_key_list_parses_any_separators(key_list: list[bytes], data: st.DataObject) -> None:
    text = key_list[0].decode()
    for key in key_list[1:]:
        text += data.draw(separators) + key.decode()
    text = (
        data.draw(st.sampled_from(["", " ", "\n"])) + text + data.draw(st.sampled_from(["", ","]))
    )
    assert parse_key_list(text) == list(dict.fromkeys(key_list))


@given(
    st.lists(keys, max_size=3),
    st.text(alphabet=st.characters(blacklist_characters=","), max_size=50),
    st.integers(min_value=0, max_value=3),
)
def test_key_list_names_the_variable_and_never_echoes_a_bad_item(
    key_list: list[bytes], bad: str, where: int
) -> None:
    if any(ch.isspace() for ch in bad):
        return  # whitespace would split the item in two
    item = "✗secret-" + bad  # never a key: "✗" is not url-safe base64
    position = min(where, len(key_list))
    items = [k.decode() for k in key_list]
    items.insert(position, item)
    with pytest.raises(ConfigurationError) as caught:
        parse_key_list(",".join(items))
    assert caught.value.field == KEYS_VARIABLE
    assert f"key {position + 1} of {len(items)}" in caught.value.problem
    assert "✗secret-" not in str(caught.value)


@pytest.mark.parametrize("text", ["", " ", ",", " , ,\n"])
def test_key_list_must_not_be_empty(text: str) -> None:
    with pytest.raises(ConfigurationError, match="no key is given"):
        parse_key_list(text)


def test_key_list_refuses_standard_base64_and_short_keys() -> None:
    key = generate_key().decode()
    standard = key.replace("-", "+").replace("_", "/")
    if standard != key:
        with pytest.raises(ConfigurationError):
            parse_key_list(standard)
    with pytest.raises(ConfigurationError):
        parse_key_list(key[:-2] + "=")


# The key file


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    created = create_key_file(path)
    assert created is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key_file(path) == created
    assert create_key_file(path) is None  # never overwritten
    assert load_key_file(path) == created
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    results: list[list[bytes] | None] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(create_key_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert load_key_file(path) == winners[0]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigurationError, match="other users") as caught:
        load_key_file(path)
    assert caught.value.field == str(path)
    assert "chmod 600" in caught.value.fix


def test_key_file_that_is_not_a_file_or_has_no_key_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "secret.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        load_key_file(directory)
    empty = tmp_path / "empty.key"
    empty.touch(mode=0o600)
    with pytest.raises(ConfigurationError, match="no key") as caught:
        load_key_file(empty)
    assert caught.value.field == str(empty)


def test_key_file_may_hold_several_keys_first_current(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    path = tmp_path / "secret.key"
    path.touch(mode=0o600)
    path.write_bytes(new + b"\n" + old + b"\n")
    assert load_key_file(path) == [new, old]


# Where the keyring comes from


def test_keyring_from_key_file_created_on_first_use(clean_env: Path) -> None:
    config = load_config()
    assert not config.key_file.exists()
    first = load_keyring(config)
    assert config.key_file == clean_env / "secret.key"
    assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
    token = first.encrypt(Secret(PASSWORD), ROW)
    assert load_keyring(load_config()).decrypt(token, ROW) == Secret(PASSWORD)


def test_keyring_from_environment_ignores_and_never_creates_the_key_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, old = generate_key(), generate_key()
    monkeypatch.setenv(KEYS_VARIABLE, f"{new.decode()}, {old.decode()}")
    config = load_config()
    keyring = load_keyring(config)
    assert len(keyring) == 2
    assert not config.key_file.exists()
    token = Keyring([old]).encrypt(Secret(PASSWORD), ROW)
    assert keyring.decrypt(token, ROW) == Secret(PASSWORD)
    assert keyring.key_index(keyring.encrypt(Secret(PASSWORD), ROW)) == 0
    assert new.decode() not in repr(config)


def test_bad_key_file_mode_stops_load_keyring(clean_env: Path) -> None:
    config = load_config()
    load_keyring(config)
    config.key_file.chmod(0o644)
    with pytest.raises(ConfigurationError, match="other users"):
        load_keyring(config)
