import pytest

from raypipe import storage
from raypipe.errors import StorageError


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_roundtrip_list_and_range(kind, tmp_path, s3_server):
    root = str(tmp_path) if kind == "local" else "s3://raypipe-test/storage-roundtrip"
    storage.write_bytes(storage.join(root, "a", "x.tif"), b"0123456789")
    storage.write_bytes(storage.join(root, "b", "y.npy"), b"abc")
    assert storage.read_bytes(storage.join(root, "a", "x.tif")) == b"0123456789"
    assert storage.read_range(storage.join(root, "a", "x.tif"), 2, 5) == b"234"
    files = storage.list_files(root, (".tif",))
    assert files == [storage.join(root, "a", "x.tif")]
    assert storage.exists(storage.join(root, "b", "y.npy"))


def test_unreachable_endpoint_names_the_uri(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SUPERSECRET123")
    storage._fs_for_scheme.cache_clear()
    try:
        with pytest.raises(StorageError) as e:
            storage.check_reachable("s3://some-bucket/data/manifest.parquet")
        assert "s3://some-bucket/data/manifest.parquet" in str(e.value)
        assert "SUPERSECRET123" not in str(e.value)  # credentials never appear in messages
    finally:
        storage._fs_for_scheme.cache_clear()


def test_redact_strips_credentials():
    assert storage.redact("s3://KEY:SECRET@bucket/x?X-Amz-Signature=abc") == "s3://bucket/x"
