"""Configuration: environment over config files, the Azure settings, secrets kept out of output."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.config import (
    AzureSettings,
    azure_settings,
    config_files,
    default_backend,
    default_workspace_path,
    read_config_file,
)
from metaverse_kit.redact import get_logger, redact

CONFIG = """
backend = "azure"

[azure]
fully_qualified_namespace = "ehns-file.servicebus.windows.net"
eventhub = "eh-file"
schema_group = "group-file"
lake = "abfss://main@acct.dfs.core.windows.net/"
schemas = ["a.B", "c.D"]
"""
EH_KEY = "aGVsbG8td29ybGQta2V5LXRoYXQtaXMtbm90LXJlYWw="
EH_CONN = (
    "Endpoint=sb://ehns-env.servicebus.windows.net/;SharedAccessKeyName=send;"
    f"SharedAccessKey={EH_KEY};EntityPath=eh-env"
)
ST_KEY = "c3RvcmFnZS1rZXktdGhhdC1pcy1ub3QtcmVhbC0xMjM0NTY3ODkw"


def test_nothing_configured_means_local(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_backend(env) == "local"
    assert default_workspace_path(env) == Path(".metaverse")
    assert azure_settings(env) == AzureSettings()


def test_the_user_config_file_then_the_workspace_one_then_the_environment(tmp_path: Path) -> None:
    user = tmp_path / "home" / ".config" / "metaverse" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text(CONFIG)
    env = {"HOME": str(tmp_path / "home"), "METAVERSE_HOME": str(tmp_path / "ws")}
    assert default_backend(env) == "azure"
    s = azure_settings(env)
    assert s.fully_qualified_namespace == "ehns-file.servicebus.windows.net"
    assert (s.eventhub, s.schema_group, s.schemas) == ("eh-file", "group-file", ("a.B", "c.D"))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "config.toml").write_text('[azure]\neventhub = "eh-workspace"\n')
    assert azure_settings(env).eventhub == "eh-workspace"
    assert azure_settings(env).schema_group == "group-file"
    env |= {"EVENTHUB": "eh-legacy", "METAVERSE_SCHEMAS": "x.Y"}
    assert azure_settings(env).eventhub == "eh-legacy"
    assert azure_settings(env).schemas == ("x.Y",)
    env |= {"METAVERSE_EVENTHUB": "eh-env", "METAVERSE_BACKEND": "local"}
    assert azure_settings(env).eventhub == "eh-env"
    assert default_backend(env) == "local"
    # XDG_CONFIG_HOME and METAVERSE_CONFIG move the file.
    assert config_files({"XDG_CONFIG_HOME": "/x", "HOME": "/h"})[1] == Path(
        "/x/metaverse/config.toml"
    )
    assert config_files({"METAVERSE_CONFIG": str(user)}) == [user]


def test_config_files_refuse_secrets_unknown_keys_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[azure]\nconnection_string = "{EH_CONN}"\n')
    with pytest.raises(mk.ConfigurationError, match="secrets do not belong") as info:
        read_config_file(path)
    assert EH_KEY.rstrip("=") not in str(info.value)
    path.write_text('[azure]\ncolour = "blue"\n')
    with pytest.raises(mk.ConfigurationError, match=r"azure\.colour"):
        read_config_file(path)
    path.write_text("backend = \n")
    with pytest.raises(mk.ConfigurationError, match="not valid TOML"):
        read_config_file(path)
    assert read_config_file(tmp_path / "missing.toml") == {}


def test_connection_strings_come_from_the_environment_and_stay_out_of_reprs() -> None:
    env = {"CONNECTION_STRING": EH_CONN, "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=" + ST_KEY}
    s = azure_settings(env)
    assert s.connection_string == EH_CONN
    assert EH_KEY not in repr(s) and ST_KEY not in repr(s)


def test_connect_azure_from_the_environment_names_where_and_hides_the_key(tmp_path: Path) -> None:
    os.environ.update(
        {
            "METAVERSE_BACKEND": "azure",
            "METAVERSE_HOME": str(tmp_path / "state"),
            "METAVERSE_CONFIG": str(tmp_path / "none.toml"),
            "CONNECTION_STRING": EH_CONN,
        }
    )
    with mk.connect() as ws:
        assert ws.backend == "azure"
        text = repr(ws)
        assert "namespace='ehns-env.servicebus.windows.net'" in text
        assert "eventhub='eh-env'" in text
        assert EH_KEY not in text and "SharedAccessKey" not in text
        assert ws.path is not None and ws.path.is_relative_to(tmp_path / "state")
        with pytest.raises(mk.ConfigurationError, match="No Capture lake is configured"):
            ws.replay()


def test_connect_azure_without_a_namespace_says_what_to_set(tmp_path: Path) -> None:
    os.environ["METAVERSE_CONFIG"] = str(tmp_path / "none.toml")
    with pytest.raises(mk.ConfigurationError, match="METAVERSE_NAMESPACE"):
        mk.connect("azure", path=tmp_path)


def test_a_malformed_connection_string_is_reported_without_it(tmp_path: Path) -> None:
    os.environ["METAVERSE_CONFIG"] = str(tmp_path / "none.toml")
    os.environ["CONNECTION_STRING"] = f"Endpoint=sb://x/;SharedAccessKey: {EH_KEY.rstrip('=')}"
    with pytest.raises(mk.ConfigurationError, match="malformed") as info:
        mk.connect("azure", path=tmp_path)
    assert EH_KEY.rstrip("=") not in str(info.value)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (EH_CONN, EH_KEY),
        (f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={ST_KEY};", ST_KEY),
        ("https://a.blob.core.windows.net/c?sv=2022&sig=abc%2Bdef%3D&se=1", "abc%2Bdef%3D"),
        ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2V2.sig", "eyJ0eX"),
        ('{"access_token": "opaque-token-value", "expires_in": 3599}', "opaque-token-value"),
        ("SharedAccessSignature sr=x&sig=s1g&se=1&skn=k", "s1g"),
        ("sas_token=sv2022abcdef", "sv2022abcdef"),
    ],
)
def test_redact_masks_every_kind_of_secret(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_keeps_where_it_failed() -> None:
    out = redact(EH_CONN)
    assert "ehns-env.servicebus.windows.net" in out and "EntityPath=eh-env" in out
    assert "SharedAccessKeyName=send" in out


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("metaverse_kit.test")
    with caplog.at_level(logging.INFO, logger="metaverse_kit.test"):
        log.info("connecting with %s", EH_CONN)
    assert EH_KEY not in caplog.text and "SharedAccessKey=***" in caplog.text


def test_importing_the_toolkit_and_the_azure_factory_imports_no_azure_sdk() -> None:
    code = (
        "import sys, metaverse_kit, metaverse_kit.backends.azure.factory\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_names_from_the_environment_or_a_config_file_follow_azure_rules(tmp_path: Path) -> None:
    from metaverse_kit.config import azure_settings

    with pytest.raises(mk.ConfigurationError, match=r"\$METAVERSE_EVENTHUB.*event hub name"):
        azure_settings({"METAVERSE_EVENTHUB": "..", "METAVERSE_CONFIG": os.devnull})
    with pytest.raises(mk.ConfigurationError, match=r"\$EVENTHUB"):
        azure_settings({"EVENTHUB": "a b", "METAVERSE_CONFIG": os.devnull})
    with pytest.raises(mk.ConfigurationError, match=r"\$METAVERSE_NAMESPACE.*6 to 50"):
        azure_settings(
            {"METAVERSE_NAMESPACE": "ab.servicebus.windows.net", "METAVERSE_CONFIG": os.devnull}
        )
    config = tmp_path / "config.toml"
    config.write_text('[azure]\nschema_group = ".."\n')
    with pytest.raises(mk.ConfigurationError, match=r"azure.schema_group \(in .*config.toml\)"):
        azure_settings({"METAVERSE_CONFIG": str(config)})


# -- the settings of a local workspace (workspace.json) -------------------------------------------

_BAD_SETTINGS = [
    ("partition_count", 0, "a whole number from 1 to 1024"),
    ("partition_count", -3, "a whole number from 1 to 1024"),
    ("partition_count", 1025, "a whole number from 1 to 1024"),
    ("partition_count", 10**9, "a whole number from 1 to 1024"),
    ("partition_count", 4.5, "a whole number"),
    ("partition_count", "4", "a whole number"),
    ("partition_count", True, "a whole number"),
    ("partition_count", None, "a whole number"),
    ("window_seconds", 0, "a whole number from 60 to 900"),
    ("window_seconds", 59, "a whole number from 60 to 900"),
    ("window_seconds", 901, "a whole number from 60 to 900"),
    ("window_seconds", -300, "a whole number from 60 to 900"),
    ("window_seconds", "300", "a whole number from 60 to 900"),
    ("codec", "gzip", "one of 'null', 'deflate'"),
    ("codec", "", "one of 'null', 'deflate'"),
    ("codec", 1, "one of 'null', 'deflate'"),
    ("compatibility", "Bogus", "one of 'None', 'Backward', 'Forward'"),
    ("compatibility", "backward", "one of 'None', 'Backward', 'Forward'"),
    ("compatibility", None, "one of 'None', 'Backward', 'Forward'"),
    ("namespace", "ab", "an Event Hubs namespace name .*6 to 50 characters"),
    ("namespace", 7, r"text \(an Event Hubs namespace name\)"),
    ("eventhub", "..", "an event hub name .*1 to 256 characters"),
    ("eventhub", ["metaverse"], r"text \(an event hub name\)"),
    ("schema_group", "a/b", "a schema group name"),
]


@pytest.mark.parametrize(("key", "value", "expected"), _BAD_SETTINGS)
def test_a_bad_workspace_setting_is_named_with_the_file_its_value_and_what_was_expected(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    from metaverse_kit.backends.local.factory import DEFAULTS
    from metaverse_kit.config import check_workspace_settings

    path = tmp_path / "ws" / "workspace.json"
    with pytest.raises(mk.ConfigurationError) as info:
        check_workspace_settings({**DEFAULTS, key: value}, path=path)
    said = str(info.value)
    assert said.startswith(f"{path} gives {key} as {value!r}; expected ")
    assert re.search(f"expected {expected}", said), said
    assert said.endswith("put back the value the workspace was created with")
    # The same value given as an option names the option instead of a file.
    with pytest.raises(mk.ConfigurationError) as info:
        check_workspace_settings({key: value}, path=None)
    assert str(info.value).startswith(f"The option {key}={value!r} is refused: expected ")


def test_every_workspace_setting_is_checked_and_the_defaults_pass() -> None:
    from metaverse_kit.backends.local.factory import DEFAULTS
    from metaverse_kit.backends.protocols import COMPATIBILITY_MODES
    from metaverse_kit.config import (
        WORKSPACE_SETTINGS,
        check_workspace_settings,
        workspace_setting_problems,
    )

    # NOTE: a setting the factory writes that this table lacked would be refused as unknown.
    assert set(WORKSPACE_SETTINGS) == set(DEFAULTS)
    assert {key for key, _, _ in _BAD_SETTINGS} == set(DEFAULTS)
    check_workspace_settings(DEFAULTS, path="workspace.json")
    edges = {"partition_count": (1, 32, 1024), "window_seconds": (60, 900)}
    edges |= {"codec": ("null", "deflate"), "compatibility": COMPATIBILITY_MODES}
    for key, values in edges.items():
        for value in values:
            assert workspace_setting_problems({**DEFAULTS, key: value}) == [], (key, value)


def test_every_bad_workspace_setting_is_listed_and_an_unknown_key_is_refused(
    tmp_path: Path,
) -> None:
    from metaverse_kit.backends.local.factory import DEFAULTS
    from metaverse_kit.config import check_workspace_settings

    path = tmp_path / "workspace.json"
    # A typo of a key would have left the workspace on its default without a word.
    with pytest.raises(mk.ConfigurationError) as info:
        check_workspace_settings({**DEFAULTS, "partition_cout": 8}, path=path)
    assert str(info.value) == (
        f"{path} gives partition_cout as 8; no setting has that name (did you mean "
        "partition_count? the settings: namespace, eventhub, partition_count, window_seconds, "
        "codec, schema_group, compatibility): remove the key, or correct its name"
    )
    bad = {**DEFAULTS, "partition_count": 0, "codec": "gzip", "compatibility": "Bogus"}
    with pytest.raises(mk.ConfigurationError) as info:
        check_workspace_settings(bad, path=path)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"{path} has 3 settings the workspace cannot open with (put back the values it was "
        "created with):"
    )
    assert [line.split(";")[0] for line in lines[1:]] == [
        "  - gives partition_count as 0",
        "  - gives codec as 'gzip'",
        "  - gives compatibility as 'Bogus'",
    ]
