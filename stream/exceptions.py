"""Exceptions of the stream library: broken infrastructure, never bad input (that is `Invalid`)."""


class StreamError(Exception):
    """Base class of every stream-library error."""


class BrokerStartError(StreamError):
    """The embedded broker could not be started."""


class BrokerUnavailableError(StreamError):
    """No broker answered at the configured bootstrap servers."""


class ProducerFlushError(StreamError):
    """Messages were not acknowledged by the broker before the flush timeout."""


class FatalClientError(StreamError):
    """The Kafka client cannot continue (librdkafka's fatal errors); retrying in the same
    process is futile, so serve exits non-zero for its supervisor to restart it."""


class CommitError(StreamError):
    """The consumer group rejected an offset commit (e.g. after a rebalance)."""


class DataPackError(StreamError):
    """A data-pack file or drift chain cannot be used as asked."""


class ScenarioInvalid(StreamError, ValueError):
    """A simulator scenario failed validation; ``field`` is the dotted path of the bad field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if not message.startswith(field) else message)
        self.field = field
        self.message = message
