"""metaverse-kit: browse Azure Schema Registry, emit DataHub-shaped metadata change events to
Event Hubs, and replay the Capture lake into Arrow, from Jupyter or offline.

Start with :func:`connect`::

    import metaverse_kit as mk
    ws = mk.connect(path="my-workspace")     # a local workspace, created if missing
    ws.emit(mk.aspects.example_mce())
    table = ws.replay()
"""

from __future__ import annotations

from metaverse_kit import history
from metaverse_kit.backends import available_backends
from metaverse_kit.backends.protocols import (
    Receipt,
    Schema,
    SchemaGroup,
    SchemaProperties,
)
from metaverse_kit.errors import (
    CaptureFileError,
    CaptureFileWarning,
    ChangedFileWarning,
    ConfigurationError,
    DamagedFileWarning,
    DecodeError,
    EmitError,
    FieldProblem,
    ImmutableReadWarning,
    IncompatibleSchemaError,
    InterruptedSendWarning,
    LateEventWarning,
    MetaverseError,
    MetaverseWarning,
    MissingDependencyError,
    MissingPartitionWarning,
    PartialHistoryWarning,
    ReadOnlyWorkspaceError,
    RegistryError,
    SchemaNotFoundError,
    SchemaParseError,
    ServiceError,
    TransientError,
    TransientServiceError,
    UndecodedEventWarning,
    ValidationError,
)
from metaverse_kit.events import aspects
from metaverse_kit.events.aspects import example_mce, mce
from metaverse_kit.events.builtin import MCE_FULL_NAME, mce_definition, mce_schema
from metaverse_kit.events.codec import decode_body, encode_body
from metaverse_kit.events.jsonform import from_json, to_avro_json
from metaverse_kit.events.urns import (
    InvalidUrnError,
    make_data_platform_urn,
    make_dataset_urn,
    make_group_urn,
    make_tag_urn,
    make_term_urn,
    make_user_urn,
    parse_dataset_urn,
    parse_urn,
)
from metaverse_kit.events.validation import validate
from metaverse_kit.history.replay import (
    ReplayOptions,
    ReplayProgress,
    ReplayStream,
    SkippedPart,
    duplicates_dropped,
    replay_batches,
    replay_capture,
    skipped_files,
)
from metaverse_kit.ingest import IngestReport, RecipeError, SourceUnreachableError, ingest
from metaverse_kit.outbox import Outbox, OutboxEntry
from metaverse_kit.workspace import Workspace, connect

__version__ = "0.1.0"

__all__ = [
    "MCE_FULL_NAME",
    "CaptureFileError",
    "CaptureFileWarning",
    "ChangedFileWarning",
    "ConfigurationError",
    "DamagedFileWarning",
    "DecodeError",
    "EmitError",
    "FieldProblem",
    "ImmutableReadWarning",
    "IncompatibleSchemaError",
    "IngestReport",
    "InterruptedSendWarning",
    "InvalidUrnError",
    "LateEventWarning",
    "MetaverseError",
    "MetaverseWarning",
    "MissingDependencyError",
    "MissingPartitionWarning",
    "Outbox",
    "OutboxEntry",
    "PartialHistoryWarning",
    "ReadOnlyWorkspaceError",
    "Receipt",
    "RecipeError",
    "RegistryError",
    "ReplayOptions",
    "ReplayProgress",
    "ReplayStream",
    "Schema",
    "SchemaGroup",
    "SchemaNotFoundError",
    "SchemaParseError",
    "SchemaProperties",
    "ServiceError",
    "SkippedPart",
    "SourceUnreachableError",
    "TransientError",
    "TransientServiceError",
    "UndecodedEventWarning",
    "ValidationError",
    "Workspace",
    "aspects",
    "available_backends",
    "connect",
    "decode_body",
    "duplicates_dropped",
    "encode_body",
    "example_mce",
    "from_json",
    "history",
    "ingest",
    "make_data_platform_urn",
    "make_dataset_urn",
    "make_group_urn",
    "make_tag_urn",
    "make_term_urn",
    "make_user_urn",
    "mce",
    "mce_definition",
    "mce_schema",
    "parse_dataset_urn",
    "parse_urn",
    "replay_batches",
    "replay_capture",
    "skipped_files",
    "to_avro_json",
    "validate",
]
