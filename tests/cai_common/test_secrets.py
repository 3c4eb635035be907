"""Secret masking of known values and of passwords inside URLs."""

from cai_common import mask_secrets


def test_known_secrets_are_masked_longest_first() -> None:
    text = "token abc123XYZ and key abc123"
    assert mask_secrets(text, ["abc123", "abc123XYZ"]) == "token *** and key ***"


def test_url_passwords_are_masked_without_being_told() -> None:
    text = "could not reach postgresql://loader:s3cr%40t@db.example:5432/warehouse"
    assert mask_secrets(text) == "could not reach postgresql://loader:***@db.example:5432/warehouse"


def test_text_without_secrets_is_unchanged() -> None:
    assert mask_secrets("loaded 5 rows", [None, ""]) == "loaded 5 rows"
