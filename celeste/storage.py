"""The S3 storage behind ``STORAGES["default"]`` when AWS_STORAGE_BUCKET_NAME is set."""

from storages.backends.s3 import S3Storage


class MediaS3Storage(S3Storage):
    """django-storages' S3 storage, with a long-lived ``Cache-Control`` on names under
    ``immutable_prefixes``: their content never changes (content-addressed), so the CDN
    and browsers may keep them for good. Other files (reports) keep the bucket's default."""

    def get_default_settings(self):
        return {**super().get_default_settings(), "immutable_prefixes": (), "immutable_cache_control": ""}

    def get_object_parameters(self, name):
        parameters = super().get_object_parameters(name)
        if self.immutable_cache_control and name.startswith(tuple(self.immutable_prefixes)):
            parameters.setdefault("CacheControl", self.immutable_cache_control)
        return parameters
